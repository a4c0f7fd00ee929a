// ffrouter's version: CMake's project(VERSION), the one place it is written.
#pragma once

#ifndef FF_VERSION
#error "FF_VERSION comes from CMakeLists.txt (add_compile_definitions)"
#endif

namespace ff {
inline constexpr const char* kVersion = FF_VERSION;
}  // namespace ff
