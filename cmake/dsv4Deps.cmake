# Dependencies of the dsv4 INTERFACE target, shared by the build tree and dsv4Config.cmake.
include(CMakeFindDependencyMacro)
find_dependency(xsimd)
find_dependency(TBB)
# JSON of safetensors headers, model.safetensors.index.json and config.json (loader).
find_dependency(nlohmann_json 3.10)
# Debian's xsimd 8.1 package links an `xtl` target; without xtl-dev installed that
# becomes `-lxtl` and the link fails. dsv4 does not use xtl: drop the link if absent.
if(TARGET xsimd AND NOT TARGET xtl)
  set_property(TARGET xsimd PROPERTY INTERFACE_LINK_LIBRARIES "")
endif()
