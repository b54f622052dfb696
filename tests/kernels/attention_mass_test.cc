// AttentionMass (the score compaction policy's probe): the mass each key gets from the
// observed query rows against softmax weights computed directly in double, the causal and
// sliding-window limits, and independence from the thread count.
#include <gtest/gtest.h>
#include <oneapi/tbb/global_control.h>

#include <cmath>
#include <vector>

#include "kernels/attention.h"
#include "tests/kernels/attention_test_util.h"

namespace mnemo::kernels {
namespace {

using testing::AttnCase;
using testing::AttnFixture;

std::vector<AttnCase> Cases() {
  std::vector<AttnCase> cases;
  uint32_t seed = 1;
  for (int window : {0, 5}) {
    for (DType t : {DType::kF16, DType::kBF16}) {
      for (auto [nh, nkv, bt] : {std::tuple{9, 3, 16}, std::tuple{4, 4, 7}}) {
        for (auto [kv_len, rows] : {std::pair{100, 37}, std::pair{17, 17}, std::pair{40, 1}}) {
          AttnCase c;
          c.head_dim = 64;
          c.block_tokens = bt;
          c.n_heads = nh;
          c.n_kv_heads = nkv;
          c.dtype = t;
          c.sliding_window = window;
          c.seqs = {{kv_len, rows}};
          c.seed = seed++;
          c.kv_scale = 2.0f;  // peaky softmax: the mass is uneven
          cases.push_back(c);
        }
      }
    }
  }
  return cases;
}

TEST(AttentionMassTest, SumsTheObservedRowsSoftmaxWeights) {
  for (const AttnCase& c : Cases()) {
    SCOPED_TRACE(c.Name());
    AttnFixture f(c);
    std::vector<float> out = f.NewOut();
    const int first = f.rows() / 2;
    const int kv_len = c.seqs[0].kv_len;
    std::vector<float> mass(static_cast<size_t>(kv_len) + 1, 0.0f);
    mass.back() = -1.0f;  // past the keys: untouched
    AttentionMass(f.Params(out.data()), first, mass.data());
    std::vector<double> want(static_cast<size_t>(kv_len), 0.0);
    for (int r = first; r < f.rows(); ++r) {
      for (int h = 0; h < c.n_heads; ++h) {
        const std::vector<double> w = f.DirectWeights(r, h);
        for (int j = 0; j < kv_len; ++j) want[j] += w[j];
      }
    }
    double total = 0.0;
    for (int j = 0; j < kv_len; ++j) {
      // f32 scores: a relative error of about 1e-6 per weight, summed over the rows.
      EXPECT_NEAR(mass[j], want[j], 1e-5 * (1.0 + want[j])) << "key " << j;
      total += mass[j];
    }
    EXPECT_EQ(mass.back(), -1.0f);
    EXPECT_NEAR(total, static_cast<double>((f.rows() - first) * c.n_heads), 1e-3);
    // Keys no observed row may attend to get nothing (causal: none here; the window: the
    // oldest ones).
    if (c.sliding_window > 0) {
      const int oldest_seen = f.positions()[first] - c.sliding_window + 1;
      for (int j = 0; j < oldest_seen; ++j) EXPECT_EQ(mass[j], 0.0f) << "key " << j;
    }
    if (HasFailure()) return;
  }
}

TEST(AttentionMassTest, SameBitsWhateverTheThreadCount) {
  AttnCase c;
  c.n_heads = 9;
  c.n_kv_heads = 3;
  c.seqs = {{300, 40}};
  AttnFixture f(c);
  std::vector<float> out = f.NewOut();
  std::vector<std::vector<float>> runs;
  for (int threads : {1, 2, 4}) {
    tbb::global_control limit(tbb::global_control::max_allowed_parallelism, threads);
    std::vector<float> mass(300, 0.0f);
    AttentionMass(f.Params(out.data()), 8, mass.data());
    runs.push_back(mass);
  }
  EXPECT_TRUE(testing::BitEqual(runs[0], runs[1]));
  EXPECT_TRUE(testing::BitEqual(runs[0], runs[2]));
}

}  // namespace
}  // namespace mnemo::kernels
