# Runtime ISA dispatch for consumers of the header-only dsv4.
#
#   dsv4_add_dispatch_library(<name>)       static library <name> holding one kernel table
#                                           per tier (each compiled with its own -m flags)
#                                           plus the selector; link it, then dsv4 entry
#                                           points dispatch at run time (DSV4_ISA honoured).
#   dsv4_enable_runtime_dispatch(<target>)  the same, made for and linked into <target>.
#
# The -m flags go on those objects only, never on a whole target: a consumer's own code
# keeps its flags. Lower tiers add -mno-... so a global -march=native cannot leak in.

# Cache (internal) variables: the functions below run in the caller's scope, which under
# add_subdirectory() is not the scope this file was included in.
if(DEFINED DSV4_DISPATCH_SOURCE_DIR)
  get_filename_component(_dsv4_dir "${DSV4_DISPATCH_SOURCE_DIR}" ABSOLUTE)
else()
  get_filename_component(_dsv4_dir "${CMAKE_CURRENT_LIST_DIR}/../dispatch" ABSOLUTE)
endif()
set(DSV4_DISPATCH_SOURCE_DIR "${_dsv4_dir}" CACHE INTERNAL "dsv4 per-tier dispatch sources")

set(DSV4_TIERS scalar avx2 avx2_vnni avx512 avx512_vnni avx512_bf16 CACHE INTERNAL "dsv4 ISA tiers")
set(_dsv4_avx2 -mavx -mavx2 -mfma -mf16c)
set(_dsv4_avx512 ${_dsv4_avx2} -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx512cd)
set(DSV4_FLAGS_scalar -mno-avx CACHE INTERNAL "")
set(DSV4_FLAGS_avx2 ${_dsv4_avx2} -mno-avx512f -mno-avxvnni CACHE INTERNAL "")
set(DSV4_FLAGS_avx2_vnni ${_dsv4_avx2} -mavxvnni -mno-avx512f CACHE INTERNAL "")
set(DSV4_FLAGS_avx512 ${_dsv4_avx512} -mno-avx512vnni -mno-avx512bf16 CACHE INTERNAL "")
set(DSV4_FLAGS_avx512_vnni ${_dsv4_avx512} -mavx512vnni -mno-avx512bf16 CACHE INTERNAL "")
set(DSV4_FLAGS_avx512_bf16 ${_dsv4_avx512} -mavx512vnni -mavx512bf16 CACHE INTERNAL "")

function(dsv4_add_dispatch_library name)
  set(objs)
  foreach(tier IN LISTS DSV4_TIERS)
    set(obj ${name}_${tier})
    add_library(${obj} OBJECT "${DSV4_DISPATCH_SOURCE_DIR}/dsv4_tier.cpp")
    target_compile_definitions(${obj} PRIVATE DSV4_TIER_NAME=${tier})
    target_compile_options(${obj} PRIVATE ${DSV4_FLAGS_${tier}})
    target_link_libraries(${obj} PRIVATE dsv4::dsv4)
    set_target_properties(${obj} PROPERTIES POSITION_INDEPENDENT_CODE ON)
    list(APPEND objs $<TARGET_OBJECTS:${obj}>)
  endforeach()
  add_library(${name} STATIC "${DSV4_DISPATCH_SOURCE_DIR}/dsv4_select.cpp" ${objs})
  set_target_properties(${name} PROPERTIES POSITION_INDEPENDENT_CODE ON)
  target_link_libraries(${name} PUBLIC dsv4::dsv4)
  target_compile_definitions(${name} PUBLIC DSV4_RUNTIME_DISPATCH=1)
endfunction()

function(dsv4_enable_runtime_dispatch target)
  if(NOT TARGET ${target}_dsv4_dispatch)
    dsv4_add_dispatch_library(${target}_dsv4_dispatch)
  endif()
  target_link_libraries(${target} PRIVATE ${target}_dsv4_dispatch)
endfunction()
