// Exported verbs this release does not implement yet. Each fails exactly as
// verbs specifies for a missing feature: pointer returns give NULL with
// errno = EOPNOTSUPP, int returns give EOPNOTSUPP. They are defined (not left
// to the host libibverbs) because the host library would dereference our
// objects' private parts and crash. README.md lists them.
#include "libffverbs/shim.h"

using ff::verbs::fail_int;
using ff::verbs::fail_ptr;

#undef ibv_reg_mr
#undef ibv_reg_mr_iova

extern "C" {

int ibv_query_qp_data_in_order(ibv_qp*, ibv_wr_opcode, uint32_t) { return 0; }  // 0: no ordering guarantee claimed

// Sharing objects across processes by kernel handle, ECE, dma-buf and
// L2 resolution need a kernel device: not supported.
ibv_context* ibv_import_device(int) { return fail_ptr<ibv_context>(EOPNOTSUPP); }
ibv_pd* ibv_import_pd(ibv_context*, uint32_t) { return fail_ptr<ibv_pd>(EOPNOTSUPP); }
void ibv_unimport_pd(ibv_pd*) {}
ibv_mr* ibv_import_mr(ibv_pd*, uint32_t) { return fail_ptr<ibv_mr>(EOPNOTSUPP); }
void ibv_unimport_mr(ibv_mr*) {}
ibv_dm* ibv_import_dm(ibv_context*, uint32_t) { return fail_ptr<ibv_dm>(EOPNOTSUPP); }
void ibv_unimport_dm(ibv_dm*) {}
int ibv_query_ece(ibv_qp*, ibv_ece*) { return fail_int(EOPNOTSUPP); }
int ibv_set_ece(ibv_qp*, ibv_ece*) { return fail_int(EOPNOTSUPP); }
ibv_mr* ibv_reg_dmabuf_mr(ibv_pd*, uint64_t, size_t, uint64_t, int, int) { return fail_ptr<ibv_mr>(EOPNOTSUPP); }
int ibv_resolve_eth_l2_from_gid(ibv_context*, ibv_ah_attr*, uint8_t*, uint16_t*) { return fail_int(EOPNOTSUPP); }

}  // extern "C"
