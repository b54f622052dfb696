// /v1/responses (docs/api.md).
#include "engine/server/internal/common.h"

namespace mnemo::server {

void RegisterResponsesRoutes(Router&) {}

}  // namespace mnemo::server
