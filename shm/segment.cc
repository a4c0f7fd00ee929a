#include "shm/segment.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <system_error>
#include <utility>

namespace ff::shm {
namespace {

[[noreturn]] void throw_errno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

std::byte* map_shared(int fd, size_t size, uint64_t offset = 0) {
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, static_cast<off_t>(offset));
  if (p == MAP_FAILED) throw_errno("mmap of shared segment");
  return static_cast<std::byte*>(p);
}

}  // namespace

Mapping::~Mapping() { reset(); }

Mapping::Mapping(Mapping&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      base_(std::exchange(other.base_, nullptr)),
      size_(std::exchange(other.size_, 0)) {}

Mapping& Mapping::operator=(Mapping&& other) noexcept {
  if (this != &other) {
    reset();
    fd_ = std::exchange(other.fd_, -1);
    base_ = std::exchange(other.base_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

void Mapping::reset() noexcept {
  if (base_ != nullptr) ::munmap(base_, size_);
  if (fd_ >= 0) ::close(fd_);
  base_ = nullptr;
  fd_ = -1;
  size_ = 0;
}

Mapping Mapping::create(const std::string& name, SegmentKind kind, size_t size) {
  size = round_up(size, kPageSize);
  int fd = ::memfd_create(name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) throw_errno("memfd_create " + name);
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0) {
    int e = errno;
    ::close(fd);
    throw std::system_error(e, std::generic_category(), "ftruncate " + name);
  }
  // The size can never change again: a client cannot shrink a segment under
  // the router (which would turn router accesses into SIGBUS).
  if (::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    int e = errno;
    ::close(fd);
    throw std::system_error(e, std::generic_category(), "seal " + name);
  }
  std::byte* base;
  try {
    base = map_shared(fd, size);
  } catch (...) {
    ::close(fd);
    throw;
  }
  Mapping m(fd, base, size);
  m.stamp_header(kind);
  return m;
}

void Mapping::stamp_header(SegmentKind kind) {
  auto* h = new (base_) SegmentHeader{};
  h->magic = kSegmentMagic;
  h->version = kLayoutVersion;
  h->kind = static_cast<uint32_t>(kind);
  h->size = size_;
  h->creator_pid = static_cast<uint32_t>(::getpid());
  h->epoch = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
}

Mapping Mapping::attach(int fd, SegmentKind kind) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw_errno("fstat of received segment");
  auto size = static_cast<size_t>(st.st_size);
  if (size < sizeof(SegmentHeader) || size % kPageSize != 0) {
    throw std::system_error(EPROTO, std::generic_category(),
                            "received segment has a bad size " + std::to_string(size));
  }
  int own = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (own < 0) throw_errno("dup of received segment");
  Mapping m(own, nullptr, 0);
  m.base_ = map_shared(own, size);
  m.size_ = size;
  const SegmentHeader& h = m.header();
  if (h.magic != kSegmentMagic || h.version != kLayoutVersion ||
      h.kind != static_cast<uint32_t>(kind) || h.size != size) {
    throw std::system_error(EPROTO, std::generic_category(),
                            "received segment header does not match (magic/version/kind/size); "
                            "are the router and libffverbs from the same build?");
  }
  return m;
}

Mapping Mapping::map_raw(int fd, size_t size, uint64_t offset) {
  int own = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (own < 0) throw_errno("dup of received memory fd");
  Mapping m(own, nullptr, 0);
  m.base_ = map_shared(own, size, offset);
  m.size_ = size;
  return m;
}

void Mapping::prefault() const {
  for (size_t off = 0; off < size_; off += kPageSize) {
    volatile std::byte* p = base_ + off;
    *p = *p;  // a write fault: the page is allocated, its byte kept
  }
}

}  // namespace ff::shm
