// The `gsa` command: info, generate, bench. Usage errors exit 2, other errors exit 1, each with
// one line on stderr.
#include <cstdio>

#include "cli/common.h"

int main(int argc, char** argv) {
  CLI::App app{"gsa: long-context LLM inference with Geometric Sparse Attention"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "help for every subcommand");
  std::string info_model;
  auto* info = app.add_subcommand("info", "show a model's architecture, tokenizer and tensors");
  info->add_option("model", info_model, "GGUF file or model name (default: smollm2-135m)");
  gsa::cli::Command generate = gsa::cli::add_generate(app);
  gsa::cli::Command bench = gsa::cli::add_bench(app);
  gsa::cli::Command eval = gsa::cli::add_eval(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "gsa: %s (see gsa --help)\n", e.what());
    return 2;
  }
  try {
    if (info->parsed()) return gsa::cli::run_info(info, info_model);
    if (generate.app->parsed()) return generate.run();
    if (bench.app->parsed()) return bench.run();
    if (eval.app->parsed()) return eval.run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gsa: %s\n", e.what());
    return 1;
  }
  return 2;
}
