// RunWorkload (runner.h): simulated users replaying a workload through a Driver.
//
// Interleaved (closed loop, think_scale 0; runner.h): users take ready turns from every open
// conversation in virtual-time order (Next below).
//
// Closed loop with think_scale > 0: `concurrency` user threads each take the next
// conversation not yet started
// (in workload order) and play it turn by turn, pausing think_seconds * think_scale before
// every turn but the first, until none is left.
//
// Open loop: the same user threads take conversations in arrival order, and each starts its
// conversation no earlier than arrival_seconds * (think_scale > 0 ? think_scale : 1) after
// the run's start (the scale compresses or stretches the workload's whole clock; with 0,
// which removes the pauses, arrivals keep their own times). So at most `concurrency`
// conversations are in flight: a conversation that arrives while every user is busy starts
// late, which its records' start times show. Give a concurrency at least the workload's peak
// of simultaneous conversations for a pure open loop.
//
// Meanwhile a sampler thread records Driver::Tiers() every sample_interval_seconds (and once
// at the start and once at the end), and the progress bar is redrawn as turns finish. Every
// wait (think time, arrival, the sampler's interval) wakes at once when the run is aborted.
#include "bench/stateful/runner.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace mnemo::bench {
namespace {

using Clock = std::chrono::steady_clock;

// Turns done out of the total, drawn on stderr: one updating line on a terminal, else a
// line at each 10 % step. Not thread-safe (the run calls it under its mutex).
class ProgressBar {
 public:
  ProgressBar(bool enabled, std::string label, int64_t total)
      : enabled_(enabled && total > 0),
        tty_(isatty(2) == 1),
        label_(std::move(label)),
        total_(total) {}

  void Update(int64_t done, double seconds) {
    if (!enabled_) return;
    if (tty_) {
      // At most ten redraws a second, and always the last one.
      if (done < total_ && seconds - last_draw_ < 0.1) return;
      last_draw_ = seconds;
      constexpr int kWidth = 30;
      const int filled = static_cast<int>(kWidth * done / total_);
      std::string bar(static_cast<size_t>(filled), '#');
      bar.append(static_cast<size_t>(kWidth - filled), '.');
      std::fprintf(stderr, "\r[%s] [%s] %lld/%lld turns %.1f s", label_.c_str(), bar.c_str(),
                   static_cast<long long>(done), static_cast<long long>(total_), seconds);
    } else {
      const int64_t step = done * 10 / total_;
      if (step <= last_step_) return;
      last_step_ = step;
      std::fprintf(stderr, "[%s] %lld/%lld turns (%lld %%) %.1f s\n", label_.c_str(),
                   static_cast<long long>(done), static_cast<long long>(total_),
                   static_cast<long long>(step * 10), seconds);
    }
    std::fflush(stderr);
  }

  void Finish() {
    if (enabled_ && tty_) {
      std::fputc('\n', stderr);
      std::fflush(stderr);
    }
  }

 private:
  const bool enabled_;
  const bool tty_;
  const std::string label_;
  const int64_t total_;
  double last_draw_ = -1.0;
  int64_t last_step_ = 0;
};

int64_t Diff(int64_t end, int64_t start) { return end >= 0 && start >= 0 ? end - start : -1; }

ServerCounters CountersDiff(const ServerCounters& a, const ServerCounters& b) {
  return {.busy_seconds =
              b.busy_seconds >= 0 && a.busy_seconds >= 0 ? b.busy_seconds - a.busy_seconds : -1,
          .tokens_computed = Diff(b.tokens_computed, a.tokens_computed),
          .tokens_reused = Diff(b.tokens_reused, a.tokens_reused),
          .tokens_generated = Diff(b.tokens_generated, a.tokens_generated),
          .bytes_to_host = Diff(b.bytes_to_host, a.bytes_to_host),
          .bytes_from_host = Diff(b.bytes_from_host, a.bytes_from_host),
          .bytes_to_disk = Diff(b.bytes_to_disk, a.bytes_to_disk),
          .bytes_from_disk = Diff(b.bytes_from_disk, a.bytes_from_disk),
          .spills_to_host = Diff(b.spills_to_host, a.spills_to_host),
          .spills_to_disk = Diff(b.spills_to_disk, a.spills_to_disk),
          .restores_from_host = Diff(b.restores_from_host, a.restores_from_host),
          .restores_from_disk = Diff(b.restores_from_disk, a.restores_from_disk)};
}

// The state the user threads, the sampler and the caller share during one run.
class Run {
 public:
  Run(Driver& driver, const Workload& w, const RunOptions& opts)
      : driver_(driver),
        w_(w),
        opts_(opts),
        total_turns_(std::accumulate(w.conversations.begin(), w.conversations.end(), int64_t{0},
                                     [](int64_t n, const WorkloadConversation& c) {
                                       return n + static_cast<int64_t>(c.turns.size());
                                     })),
        progress_(opts.progress, opts.label.empty() ? "run" : opts.label, total_turns_) {
    order_.resize(w.conversations.size());
    std::iota(order_.begin(), order_.end(), 0);
    if (opts.open_loop) {
      std::stable_sort(order_.begin(), order_.end(), [&](int a, int b) {
        return w.conversations[static_cast<size_t>(a)].arrival_seconds <
               w.conversations[static_cast<size_t>(b)].arrival_seconds;
      });
    }
  }

  absl::StatusOr<ModeRun> Play() {
    ModeRun run;
    run.driver = driver_.name();
    run.kv_bytes_per_token = driver_.kv_bytes_per_token();
    run.device_budget_bytes = driver_.device_budget_bytes();
    run.host_budget_bytes = driver_.host_budget_bytes();
    const ServerCounters start_counters = driver_.Counters();
    t0_ = Clock::now();
    Sample();
    std::thread sampler([this] { SampleLoop(); });
    const int users =
        std::max(1, std::min<int>(opts_.concurrency, static_cast<int>(w_.conversations.size())));
    std::vector<std::thread> threads;
    threads.reserve(static_cast<size_t>(users));
    const bool interleave = !opts_.open_loop && opts_.think_scale <= 0;
    if (interleave) {
      convs_.resize(w_.conversations.size());
      for (size_t i = 0; i < convs_.size(); ++i)
        convs_[i].ready = w_.conversations[i].arrival_seconds;
    }
    for (int i = 0; i < users; ++i) {
      threads.emplace_back([this, interleave] { interleave ? InterleavedUser() : User(); });
    }
    for (std::thread& t : threads) t.join();
    // An aborted interleaved run leaves conversations open: end them (End frees their state).
    for (Conv& v : convs_) {
      if (v.client == nullptr) continue;
      if (absl::Status st = v.client->End(); !st.ok()) Abort(st);
      v.client.reset();
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      finished_ = true;
    }
    cv_.notify_all();
    sampler.join();
    Sample();
    run.wall_seconds = Seconds();
    progress_.Finish();
    if (!error_.ok()) return error_;
    run.counters = CountersDiff(start_counters, driver_.Counters());
    run.turns = std::move(records_);
    run.samples = std::move(samples_);
    return run;
  }

 private:
  double Seconds() const { return std::chrono::duration<double>(Clock::now() - t0_).count(); }

  // Waits until `seconds` after the run's start; false when the run was aborted meanwhile.
  bool WaitUntil(double seconds) {
    std::unique_lock<std::mutex> lock(mu_);
    const auto deadline =
        t0_ + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
    return !cv_.wait_until(lock, deadline, [this] { return aborted_; });
  }

  bool aborted() {
    std::lock_guard<std::mutex> lock(mu_);
    return aborted_;
  }

  // Keeps the first error and wakes every wait.
  void Abort(absl::Status st) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (error_.ok()) error_ = std::move(st);
      aborted_ = true;
    }
    cv_.notify_all();
  }

  void Sample() {
    std::optional<TierSample> s = driver_.Tiers();
    if (!s) return;
    s->seconds = Seconds();
    std::lock_guard<std::mutex> lock(mu_);
    samples_.push_back(*s);
  }

  void SampleLoop() {
    if (opts_.sample_interval_seconds <= 0) return;
    const auto interval = std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double>(opts_.sample_interval_seconds));
    auto next = Clock::now() + interval;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        if (cv_.wait_until(lock, next, [this] { return finished_ || aborted_; })) return;
      }
      Sample();
      next += interval;
    }
  }

  // `n` more turns are done (played, failed or skipped).
  void Advance(int64_t n) {
    std::lock_guard<std::mutex> lock(mu_);
    turns_done_ += n;
    progress_.Update(turns_done_, Seconds());
  }

  void User() {
    for (;;) {
      const size_t k = next_.fetch_add(1);
      if (k >= order_.size() || aborted()) return;
      const int index = order_[k];
      const WorkloadConversation& c = w_.conversations[static_cast<size_t>(index)];
      if (opts_.open_loop) {
        const double scale = opts_.think_scale > 0 ? opts_.think_scale : 1.0;
        if (!WaitUntil(c.arrival_seconds * scale)) return;
      }
      PlayConversation(index, c);
    }
  }

  // ---- interleaved ----

  struct Conv {
    std::unique_ptr<ConversationClient> client;
    int next_turn = 0;
    double ready = 0;  // virtual time at which next_turn may be sent (turn 0: the arrival)
    bool in_flight = false;
    bool done = false;
  };

  // The conversation whose next turn is ready earliest (ties: the lower index) among those
  // not in flight; -1 when every one is done or the run is aborted. Waits while the only
  // conversations left are in flight. Marks the one returned in flight.
  int Next() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      if (aborted_) return -1;
      int best = -1;
      bool any_left = false;
      for (size_t i = 0; i < convs_.size(); ++i) {
        Conv& v = convs_[i];
        if (v.done) continue;
        any_left = true;
        if (v.in_flight) continue;
        if (best < 0 || v.ready < convs_[static_cast<size_t>(best)].ready) {
          best = static_cast<int>(i);
        }
      }
      if (!any_left) return -1;
      if (best >= 0) {
        convs_[static_cast<size_t>(best)].in_flight = true;
        return best;
      }
      cv_.wait(lock);
    }
  }

  void InterleavedUser() {
    for (int index; (index = Next()) >= 0;) {
      const WorkloadConversation& c = w_.conversations[static_cast<size_t>(index)];
      Conv& v = convs_[static_cast<size_t>(index)];  // in flight: this thread's alone
      const int n_turns = static_cast<int>(c.turns.size());
      const int t = v.next_turn;
      bool end = false;
      if (t == 0) {
        auto client = driver_.Open(c);
        if (!client.ok()) {
          Abort(client.status());
          return;
        }
        v.client = std::move(*client);
      }
      const double start = Seconds();
      absl::StatusOr<TurnRecord> rec = v.client->Turn(t);
      const double end_s = Seconds();
      if (!rec.ok()) {
        Abort(rec.status());
        end = true;
      } else {
        rec->conversation = index;
        rec->turn = t;
        rec->start_seconds = start;
        rec->end_seconds = end_s;
        end = !rec->error.empty() || t + 1 == n_turns;
        {
          std::lock_guard<std::mutex> lock(mu_);
          records_.push_back(std::move(*rec));
        }
        Advance(end ? n_turns - t : 1);  // a failed turn skips the rest
      }
      if (end) {
        if (absl::Status st = v.client->End(); !st.ok()) Abort(st);
        v.client.reset();
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        v.in_flight = false;
        v.done = end;
        if (!end) {
          v.next_turn = t + 1;
          v.ready += (end_s - start) + c.turns[static_cast<size_t>(t + 1)].think_seconds;
        }
      }
      cv_.notify_all();
    }
  }

  // ---- one conversation at a time ----

  void PlayConversation(int index, const WorkloadConversation& c) {
    const int64_t n_turns = static_cast<int64_t>(c.turns.size());
    auto client = driver_.Open(c);
    if (!client.ok()) {
      Abort(client.status());
      return;
    }
    int64_t played = 0;
    for (int t = 0; t < static_cast<int>(n_turns); ++t) {
      const double think = c.turns[static_cast<size_t>(t)].think_seconds * opts_.think_scale;
      if (t > 0 && think > 0 && !WaitUntil(Seconds() + think)) break;
      if (aborted()) break;
      const double start = Seconds();
      absl::StatusOr<TurnRecord> rec = (*client)->Turn(t);
      const double end = Seconds();
      if (!rec.ok()) {
        Abort(rec.status());
        break;
      }
      rec->conversation = index;
      rec->turn = t;
      rec->start_seconds = start;
      rec->end_seconds = end;
      const bool failed = !rec->error.empty();
      {
        std::lock_guard<std::mutex> lock(mu_);
        records_.push_back(std::move(*rec));
      }
      ++played;
      Advance(1);
      if (failed) break;
    }
    if (played < n_turns) Advance(n_turns - played);  // skipped: the bar still ends full
    if (absl::Status st = (*client)->End(); !st.ok()) Abort(st);
  }

  Driver& driver_;
  const Workload& w_;
  const RunOptions& opts_;
  const int64_t total_turns_;
  std::vector<int> order_;  // conversation indices in the order users take them
  std::atomic<size_t> next_{0};
  std::vector<Conv> convs_;  // interleaved: one per conversation; guarded by mu_ except a
                             // conversation's client while it is in flight
  Clock::time_point t0_;

  std::mutex mu_;
  std::condition_variable cv_;       // signals aborted_ and finished_
  bool aborted_ = false;             // guarded by mu_
  bool finished_ = false;            // guarded by mu_: every user is done
  absl::Status error_;               // guarded by mu_: the first Status error
  std::vector<TurnRecord> records_;  // guarded by mu_
  std::vector<TierSample> samples_;  // guarded by mu_
  int64_t turns_done_ = 0;           // guarded by mu_
  ProgressBar progress_;             // guarded by mu_
};

}  // namespace

absl::StatusOr<ModeRun> RunWorkload(Driver& driver, const Workload& w, const RunOptions& opts) {
  Run run(driver, w, opts);
  return run.Play();
}

}  // namespace mnemo::bench
