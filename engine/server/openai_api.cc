// /v1/models, /v1/chat/completions, /v1/completions (docs/api.md).
#include "engine/server/internal/common.h"

namespace mnemo::server {

void RegisterOpenAiRoutes(Router&) {}

}  // namespace mnemo::server
