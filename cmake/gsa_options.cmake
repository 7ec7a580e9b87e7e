# Compiler flags shared by every gsa target: warnings, sanitizers, native tuning.
add_library(gsa_flags INTERFACE)
target_compile_options(gsa_flags INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wno-unused-parameter>)
if(GSA_WERROR)
  target_compile_options(gsa_flags INTERFACE $<$<COMPILE_LANGUAGE:CXX>:-Werror>)
endif()
if(GSA_NATIVE)
  target_compile_options(gsa_flags INTERFACE $<$<COMPILE_LANGUAGE:CXX>:-march=native>)
endif()
if(GSA_SANITIZE)
  target_compile_options(gsa_flags INTERFACE
    $<$<COMPILE_LANGUAGE:CXX>:-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined>)
  target_link_options(gsa_flags INTERFACE -fsanitize=address,undefined)
endif()
if(GSA_TSAN)
  target_compile_options(gsa_flags INTERFACE $<$<COMPILE_LANGUAGE:CXX>:-fsanitize=thread -fno-omit-frame-pointer>)
  target_link_options(gsa_flags INTERFACE -fsanitize=thread)
endif()
