#!/bin/bash
# libffverbs exports exactly the public libibverbs API (every default-version
# symbol of the host's libibverbs, in the same version node) plus
# ibv_query_gid_type@IBVERBS_PRIVATE_34, librdmacm's rdma_* API (every
# default-version rdma_* symbol of the host's librdmacm; of its rsocket
# family only rsocket, which refuses with ENOSYS) and its own
# ibv_malloc/ibv_free (FFVERBS_1.0), and dlopen at glibc's two versions (a
# dlopen of libibverbs or librdmacm gives the shim: libffverbs/dlopen.cc),
# glibc's allocator entry points at glibc's versions (the shared heap,
# libffverbs/shared_heap.cc; not in sanitized builds), and nothing else.
source "$(dirname "$0")/lib.sh"

host=$(readelf --dyn-syms -W /usr/lib/x86_64-linux-gnu/libibverbs.so.1 |
       awk '$7!="UND" && $8 ~ /@@IBVERBS_1/ {print $8}' | sed 's/@@/@/' | sort)
host_cm=$(readelf --dyn-syms -W /usr/lib/x86_64-linux-gnu/librdmacm.so.1 |
          awk '$7!="UND" && $8 ~ /^rdma_.*@@RDMACM_1/ {print $8}' | sed 's/@@/@/' | sort)
ours=$(readelf --dyn-syms -W "$LIBFFVERBS" |
       awk '$7!="UND" && $8 ~ /@@/ && $4=="FUNC" {print $8}' | sed 's/@@/@/' | sort)
heap=""
dynamic=$(readelf -d "$LIBFFVERBS")
if ! grep -q 'NEEDED.*lib[at]san' <<<"$dynamic"; then
  heap=$(printf '%s@GLIBC_2.2.5\n' malloc free realloc posix_memalign memalign valloc pvalloc malloc_usable_size
         printf 'aligned_alloc@GLIBC_2.16\nreallocarray@GLIBC_2.26\n')
fi
want=$(printf '%s\n%s\nibv_query_gid_type@IBVERBS_PRIVATE_34\nibv_malloc@FFVERBS_1.0\nibv_free@FFVERBS_1.0\nrsocket@RDMACM_1.0\ndlopen@GLIBC_2.34\n%s\n' "$host" "$host_cm" "$heap" | grep -v '^$' | sort)
if [ "$ours" != "$want" ]; then
  diff <(echo "$want") <(echo "$ours") | sed 's/^</missing:/; s/^>/extra:/' | grep -E 'missing|extra'
  fail "libffverbs exports differ from the public libibverbs and librdmacm APIs"
fi
pass "libffverbs exports the $(wc -l <<<"$want") public libibverbs and librdmacm symbols in their version nodes"
other=$(readelf --dyn-syms -W "$LIBFFVERBS" | awk '$7!="UND" && $5=="GLOBAL" && $4!="OBJECT" {print $8}' |
        grep -v '@@\(IBVERBS\|FFVERBS\|RDMACM\)' | grep -v '^\(IBVERBS\|FFVERBS\|RDMACM\)' |
        grep -v '@@GLIBC_2\.' | grep -vx 'dlopen@GLIBC_2.2.5\|GLIBC_2.2.5\|GLIBC_2.16\|GLIBC_2.26\|GLIBC_2.34' || true)
[ -z "$other" ] || fail "unexpected exports: $other"
pass "nothing else is exported (the static C++ runtime stays local)"
echo "2 passed, 0 failed"
