#include "tools/mnemo/engine_flags.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace mnemo::cli {

absl::Status ApplyEngineFlags(const ParsedArgs& args, engine::EngineOptions* eo) {
  for (auto [flag, into] : {std::pair{"kv-budget", &eo->kv_budget_bytes},
                            std::pair{"device-budget", &eo->kv_budget_bytes},
                            std::pair{"host-budget", &eo->host_budget_bytes},
                            std::pair{"disk-budget", &eo->disk_budget_bytes},
                            std::pair{"tenant-host-quota", &eo->tenant_host_quota_bytes},
                            std::pair{"tenant-disk-quota", &eo->tenant_disk_quota_bytes}}) {
    if (auto text = args.Get(flag)) {
      auto bytes = ParseByteSize(*text);
      if (!bytes.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("--", flag, ": ", bytes.status().message()));
      }
      *into = *bytes;
    }
  }
  // On a GPU the device budget is the whole device allocation (weights, scratch, KV).
  eo->device_budget_bytes = args.Has("device-budget") ? eo->kv_budget_bytes : 0;
  if (auto dir = args.Get("state-dir")) eo->state_dir = *dir;
  if (auto device = args.Get("device")) {
    auto d = engine::Device::Parse(*device);
    if (!d.ok()) return absl::InvalidArgumentError(absl::StrCat("--", d.status().message()));
    eo->device = *d;
  }
  if (auto mode = args.Get("durability")) {
    if (eo->state_dir.empty()) return absl::InvalidArgumentError("--durability needs --state-dir");
    if (*mode == "async") {
      eo->durability = engine::Durability::kAsync;
    } else if (*mode == "sync") {
      eo->durability = engine::Durability::kSync;
    } else if (*mode == "none") {
      eo->durability = engine::Durability::kNone;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("--durability must be async, sync or none, got \"", *mode, "\""));
    }
  }
  return absl::OkStatus();
}

}  // namespace mnemo::cli
