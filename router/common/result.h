// The router's one error shape: an errno for the client plus a sentence for
// the operator, carried by Result<T> (a value or an Error) from every Fabric
// call and every control-message handler. Setup code that cannot go on
// throws instead (with the same kind of sentence); the data path uses
// statuses (ibv_wc_status) and asserts its invariants.
//
// (std::expected is C++23; this is the small part of it the router needs.)
#pragma once

#include <cassert>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>

namespace ff::router {

struct Error {
  int code = 0;         // a positive errno, as verbs returns it
  std::string message;  // what happened and, where it helps, what to do
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(Error e) : v_(std::move(e)) { assert(std::get<Error>(v_).code != 0); }  // NOLINT: implicit by design
  template <typename U>
    requires std::is_convertible_v<U&&, T> && (!std::is_same_v<std::remove_cvref_t<U>, Error>)
  Result(U&& value) : v_(std::in_place_index<0>, std::forward<U>(value)) {}  // NOLINT: implicit by design

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  const Error& error() const { return std::get<Error>(v_); }
  T& value() { return std::get<0>(v_); }
  const T& value() const { return std::get<0>(v_); }
  T& operator*() { return value(); }
  T* operator->() { return &value(); }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error e) : error_(std::move(e)) { assert(error_.code != 0); }  // NOLINT: implicit by design
  bool ok() const { return error_.code == 0; }
  explicit operator bool() const { return ok(); }
  const Error& error() const { return error_; }

 private:
  Error error_;
};

// A Result with no value: success, or why not.
using Status = Result<void>;

}  // namespace ff::router
