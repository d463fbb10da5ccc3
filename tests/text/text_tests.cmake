# Included from tests/CMakeLists.txt when dsv4::text is available (label text).
#
# goldens.tokenizer: reference/make_tokenizer.py trains a byte-level BPE in the official
# DeepSeek-V4 tokenizer.json structure with Hugging Face `tokenizers` and writes the ids it gives
# for >= 12 000 lines (plus variants exercising the other supported components). It needs
# `tokenizers` in ${DSV4_PYTHON} (scripts/setup.sh installs it into .venv, which the top
# CMakeLists.txt prefers): without it the fixture fails with a message saying so, and the
# tokenizer test does not run (reported as failed), never passes silently.
add_test(NAME goldens.tokenizer
  COMMAND ${DSV4_PYTHON} ${PROJECT_SOURCE_DIR}/reference/make_tokenizer.py --goldens ${DSV4_GOLDENS_DIR})
set_tests_properties(goldens.tokenizer PROPERTIES FIXTURES_SETUP goldens_tokenizer LABELS "text;goldens")

add_executable(dsv4_test_tokenizer test_main.cpp text/test_tokenizer.cpp)
add_executable(dsv4_test_chat test_main.cpp text/test_chat.cpp)
foreach(exe dsv4_test_tokenizer dsv4_test_chat)
  target_link_libraries(${exe} PRIVATE dsv4_dispatch dsv4::text doctest::doctest)
  target_compile_options(${exe} PRIVATE ${DSV4_WARNINGS})
  target_include_directories(${exe} PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
endforeach()
add_test(NAME text.tokenizer COMMAND dsv4_test_tokenizer)
set_tests_properties(text.tokenizer PROPERTIES LABELS text FIXTURES_REQUIRED "goldens_tokenizer;checkpoint_toy"
  ENVIRONMENT "DSV4_GOLDENS=${DSV4_GOLDENS_DIR};DSV4_TOY_CHECKPOINT=${DSV4_TOY_CHECKPOINT}")
add_test(NAME text.chat COMMAND dsv4_test_chat)
set_tests_properties(text.chat PROPERTIES LABELS text)
