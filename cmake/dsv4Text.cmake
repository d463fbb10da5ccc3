# dsv4::text: the tokenizer (tokenizer.json reader) and the chat encoding, headers under
# include/dsv4/text/. Optional and separate from dsv4::dsv4 so that the kernel library gains no
# dependency: it needs PCRE2 (the pre-tokenizer's Unicode regexes, JIT) and ICU's common library
# (NFC normalization, White_Space / Alphabetic). Debian: libpcre2-dev libicu-dev pkg-config.
# Build tree only (not installed or exported yet).
find_package(PkgConfig QUIET)
if(PkgConfig_FOUND)
  pkg_check_modules(DSV4_PCRE2 QUIET IMPORTED_TARGET libpcre2-8)
endif()
find_package(ICU QUIET COMPONENTS uc)
if(TARGET PkgConfig::DSV4_PCRE2 AND TARGET ICU::uc)
  add_library(dsv4_text INTERFACE)
  add_library(dsv4::text ALIAS dsv4_text)
  target_link_libraries(dsv4_text INTERFACE dsv4 PkgConfig::DSV4_PCRE2 ICU::uc)
  set(DSV4_TEXT ON)
  message(STATUS "dsv4: dsv4::text (tokenizer, chat encoding) with PCRE2 ${DSV4_PCRE2_VERSION}, ICU ${ICU_VERSION}")
else()
  set(DSV4_TEXT OFF)
  message(STATUS "dsv4: no dsv4::text (needs PCRE2 and ICU: libpcre2-dev libicu-dev pkg-config)")
endif()
