// /v1/sessions (docs/api.md).
#include "engine/server/internal/common.h"

namespace mnemo::server {

void RegisterSessionRoutes(Router&) {}

}  // namespace mnemo::server
