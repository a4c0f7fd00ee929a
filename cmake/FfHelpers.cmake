# Small helpers so that each directory's CMakeLists.txt stays a few lines.

set(FF_WARNINGS -Wall -Wextra -Wpedantic -Wconversion -Wsign-conversion -Wshadow
    -Wold-style-cast -Wnon-virtual-dtor -Woverloaded-virtual
    # GCC 12 reports atomics reached through a member pointer as writes into
    # a zero-sized region (a known false positive).
    $<$<CXX_COMPILER_ID:GNU>:-Wno-stringop-overflow>)

function(ff_apply_warnings target)
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${FF_WARNINGS}>)
  if(FF_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()

# Layering: a target sees only the headers of the folders it owns and of the
# targets it links (DEPS), never the whole source tree. Each target gets its
# own include root, build/layers/<target>/, holding links to its folders'
# headers (`#include "router/fabric/fabric.h"` keeps working), so an include
# that crosses the architecture's arrows the wrong way fails to compile
# (tests/layering/ shows it).
# ff_expose_headers(target dir...) : dirs relative to the source root, not recursive.
function(ff_expose_headers target)
  set(root ${CMAKE_BINARY_DIR}/layers/${target})
  file(REMOVE_RECURSE ${root})
  foreach(dir ${ARGN})
    file(GLOB headers CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/${dir}/*.h)
    file(MAKE_DIRECTORY ${root}/${dir})
    foreach(h ${headers})
      get_filename_component(leaf ${h} NAME)
      file(CREATE_LINK ${h} ${root}/${dir}/${leaf} SYMBOLIC)
    endforeach()
  endforeach()
  get_target_property(kind ${target} TYPE)
  if(kind STREQUAL "INTERFACE_LIBRARY")
    target_include_directories(${target} INTERFACE ${root})
  elseif(kind STREQUAL "STATIC_LIBRARY")
    target_include_directories(${target} PUBLIC ${root})
  else()
    target_include_directories(${target} PRIVATE ${root})
  endif()
endfunction()

# ff_library(name SOURCES ... HEADERS dir... [DEPS ...])
# A static library owning the headers of HEADERS; DEPS are the layers below.
function(ff_library name)
  cmake_parse_arguments(A "" "" "SOURCES;DEPS;HEADERS" ${ARGN})
  add_library(${name} STATIC ${A_SOURCES})
  ff_expose_headers(${name} ${A_HEADERS})
  target_link_libraries(${name} PUBLIC ${A_DEPS})
  ff_apply_warnings(${name})
endfunction()

# ff_executable(name SOURCES ... [DEPS ...])
function(ff_executable name)
  cmake_parse_arguments(A "" "" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${A_SOURCES})
  target_link_libraries(${name} PRIVATE ${A_DEPS})
  ff_apply_warnings(${name})
endfunction()

# ff_preload_module(name SOURCES ... VERSION_SCRIPT file [DEPS ...])
# A shared object meant for LD_PRELOAD that exports exactly what the version
# script lists.
function(ff_preload_module name)
  cmake_parse_arguments(A "" "VERSION_SCRIPT" "SOURCES;DEPS" ${ARGN})
  add_library(${name} SHARED ${A_SOURCES})
  # Default visibility: the version script alone decides what is exported
  # (`local: *` hides the rest, the static C++ runtime included).
  set_target_properties(${name} PROPERTIES PREFIX "lib" LINK_DEPENDS ${A_VERSION_SCRIPT})
  target_link_options(${name} PRIVATE -Wl,--version-script=${A_VERSION_SCRIPT} -Wl,-z,defs
                      -Wl,-z,now -static-libstdc++ -static-libgcc)
  target_link_libraries(${name} PRIVATE ${A_DEPS})
  ff_apply_warnings(${name})
endfunction()

# ff_test(name SOURCES ... [DEPS ...] [LABELS ...])
function(ff_test name)
  cmake_parse_arguments(A "" "" "SOURCES;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${A_SOURCES})
  target_link_libraries(${name} PRIVATE ${A_DEPS} GTest::gtest GTest::gmock GTest::gtest_main)
  ff_apply_warnings(${name})
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES LABELS "${A_LABELS}" TIMEOUT 300)
endfunction()

# ff_bench(name SOURCES ... [DEPS ...])
function(ff_bench name)
  cmake_parse_arguments(A "" "" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${A_SOURCES})
  target_link_libraries(${name} PRIVATE ${A_DEPS} benchmark::benchmark)
  ff_apply_warnings(${name})
endfunction()
