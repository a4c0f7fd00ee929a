// Programs that reach libibverbs or librdmacm through dlopen (NCCL's
// ibvwrap: dlopen("libibverbs.so"), then dlvsym(handle, name, "IBVERBS_1.1"))
// look symbols up in the object the handle names, not in the global scope,
// so LD_PRELOAD alone never reaches them. dlopen is interposed: those names
// give back the shim's own handle, where the same versioned symbols are.
//
// Every other dlopen goes to glibc's as a tail call: glibc takes the caller
// from dlopen's return address (the caller's RUNPATH, $ORIGIN and namespace
// decide what a bare name finds), and a tail call leaves that address the
// program's. tests/e2e/test_dlopen.sh checks both halves.
#include <dlfcn.h>

#include <cstring>
#include <string_view>

#include "libffverbs/shim.h"

namespace ff::verbs {

using DlopenFn = void* (*)(const char*, int);

namespace {

DlopenFn glibc_dlopen() {
  static const DlopenFn real = [] {
    void* f = ::dlvsym(RTLD_NEXT, "dlopen", "GLIBC_2.34");
    if (f == nullptr) f = ::dlvsym(RTLD_NEXT, "dlopen", "GLIBC_2.2.5");
    return reinterpret_cast<DlopenFn>(f);
  }();
  return real;
}

// libibverbs.so, libibverbs.so.1, libibverbs.so.1.14.44.0 (and librdmacm's),
// by name or by path.
bool served_here(const char* file) {
  if (file == nullptr) return false;
  std::string_view name(file);
  if (auto slash = name.rfind('/'); slash != std::string_view::npos) name.remove_prefix(slash + 1);
  for (std::string_view lib : {"libibverbs.so", "librdmacm.so"})
    if (name.starts_with(lib) && (name.size() == lib.size() || name[lib.size()] == '.')) return true;
  return false;
}

// The shim itself (loaded already: LD_PRELOAD), or null when `file` is not
// one of the libraries it serves.
void* own_handle_for(const char* file, int flags) {
  if (!served_here(file)) return nullptr;
  Dl_info self{};
  if (::dladdr(reinterpret_cast<void*>(&own_handle_for), &self) == 0 || self.dli_fname == nullptr) return nullptr;
  void* h = glibc_dlopen()(self.dli_fname, (flags & ~RTLD_LAZY) | RTLD_NOW | RTLD_NOLOAD);
  if (h != nullptr) debug("dlopen(\"%s\"): the shim's own handle (%s)", file, self.dli_fname);
  return h;
}

}  // namespace

void* host_dlopen(const char* file, int flags) { return glibc_dlopen()(file, flags); }

}  // namespace ff::verbs

// What the entry point below asks first: the shim's handle for the names it
// serves; null, with `ffv_glibc_dlopen` set, for glibc's to take the call.
extern "C" {
__attribute__((visibility("hidden"))) ff::verbs::DlopenFn ffv_glibc_dlopen = nullptr;
__attribute__((visibility("hidden"))) void* ffv_dlopen_own(const char* file, int flags) {
  ffv_glibc_dlopen = ff::verbs::glibc_dlopen();
  return ff::verbs::own_handle_for(file, flags);
}
}

// The entry point, exported as dlopen@@GLIBC_2.34 and dlopen@GLIBC_2.2.5
// (libffverbs.map: the versions programs import it at). On x86-64 it is
// written out so that glibc's dlopen is entered by a jump whatever the
// build's optimization or sanitizers (which turn tail calls into calls);
// elsewhere the compiler's sibling call (-O2) does it.
#if defined(__x86_64__)
__asm__(R"(
  .text
  .p2align 4
  .globl ffv_interposed_dlopen
  .type ffv_interposed_dlopen, @function
ffv_interposed_dlopen:
  .cfi_startproc
  push %rdi
  .cfi_adjust_cfa_offset 8
  push %rsi
  .cfi_adjust_cfa_offset 8
  sub $8, %rsp
  .cfi_adjust_cfa_offset 8
  call ffv_dlopen_own
  add $8, %rsp
  .cfi_adjust_cfa_offset -8
  pop %rsi
  .cfi_adjust_cfa_offset -8
  pop %rdi
  .cfi_adjust_cfa_offset -8
  test %rax, %rax
  jnz 1f
  jmp *ffv_glibc_dlopen(%rip)
1:
  ret
  .cfi_endproc
  .size ffv_interposed_dlopen, .-ffv_interposed_dlopen
)");
#else
extern "C" __attribute__((optimize("optimize-sibling-calls"))) void* ffv_interposed_dlopen(const char* file,
                                                                                          int flags) {
  if (void* own = ffv_dlopen_own(file, flags)) return own;
  return ffv_glibc_dlopen(file, flags);
}
#endif
__asm__(R"(
  .globl ffv_interposed_dlopen_old
  .set ffv_interposed_dlopen_old, ffv_interposed_dlopen
  .symver ffv_interposed_dlopen, dlopen@@GLIBC_2.34
  .symver ffv_interposed_dlopen_old, dlopen@GLIBC_2.2.5
)");
