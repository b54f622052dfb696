// PagedAttention / KvWrite entry points.
#include "kernels/attention.h"

namespace mnemo::kernels {

// Interim: the fast versions arrive in the next change; until then they are the references.
void PagedAttention(const AttentionParams& p) { PagedAttentionRef(p); }
void KvWrite(const KvWriteParams& p) { KvWriteRef(p); }

}  // namespace mnemo::kernels
