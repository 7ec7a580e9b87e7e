// The `gsa` command: info, generate, bench, eval, version, help. Usage errors exit 2, other
// errors exit 1, each with one line on stderr.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <string>

#include "cli/common.h"

#ifndef GSA_VERSION
#define GSA_VERSION "unknown"
#endif

namespace {

constexpr const char* kVersion = "gsa " GSA_VERSION;

// A closed stdin, stdout or stderr would hand its descriptor to the next file opened (a model,
// an -o file), and output meant for the terminal would land in that file. /dev/null opened the
// wrong way round holds the descriptor, so reads and writes fail and are reported instead.
void hold_closed_std_fds() {
  for (int fd = 0; fd <= 2; ++fd) {
    if (fcntl(fd, F_GETFD) != -1 || errno != EBADF) continue;
    const int n = open("/dev/null", fd == 0 ? O_WRONLY : O_RDONLY);
    if (n >= 0 && n != fd) {
      dup2(n, fd);
      close(n);
    }
  }
}

// The deepest subcommand the command line named (the root app when none).
CLI::App* deepest(CLI::App* app) {
  for (auto subs = app->get_subcommands(); !subs.empty(); subs = app->get_subcommands()) app = subs.front();
  return app;
}

std::string command_path(const CLI::App* app) {
  std::string path;
  for (; app; app = app->get_parent()) path = path.empty() ? app->get_name() : app->get_name() + " " + path;
  return path;
}

// Words left over by the parse: a word where a subcommand goes, words after a prompt, or an
// unknown option; each named in one line.
int extras_error(CLI::App& root, const CLI::ExtrasError& e) {
  CLI::App* at = deepest(&root);
  const std::vector<std::string> words = root.remaining(true);
  if (words.empty()) return std::fprintf(stderr, "gsa: %s (see gsa --help)\n", e.what()), 2;
  const std::string& first = words.front();
  const std::string path = command_path(at);
  std::string joined;
  for (const std::string& w : words) joined += (joined.empty() ? "" : " ") + w;
  const auto subs = at->get_subcommands([](const CLI::App*) { return true; });
  if (first.size() > 1 && first[0] == '-') {
    std::fprintf(stderr, "gsa: unknown option '%s' (see %s --help)\n", first.c_str(), path.c_str());
  } else if (!subs.empty()) {
    std::string known;
    for (const CLI::App* s : subs) known += (known.empty() ? "" : ", ") + s->get_name();
    std::fprintf(stderr, "gsa: unknown subcommand '%s' (%s has: %s; see %s --help)\n", first.c_str(),
                 path.c_str(), known.c_str(), path.c_str());
  } else if (const CLI::Option* p = at->get_option_no_throw("--prompt"); p && p->count() > 0) {
    std::fprintf(stderr, "gsa: unexpected argument%s '%s' after the prompt: did you mean to quote the "
                 "prompt? (-p \"%s %s\")\n", words.size() > 1 ? "s" : "", joined.c_str(),
                 p->results().back().c_str(), joined.c_str());
  } else {
    std::fprintf(stderr, "gsa: unexpected argument%s '%s' (see %s --help)\n", words.size() > 1 ? "s" : "",
                 joined.c_str(), path.c_str());
  }
  return 2;
}

// The exit code, once stdout is flushed: a command that succeeded but whose output could not
// be written (a full disk, a closed stdout) fails.
int finish(int rc) {
  if (rc != 0) {
    std::fflush(stdout);  // the command has reported its error
    return rc;
  }
  return gsa::cli::flush_stdout() ? 0 : 1;
}

// Help and version text through stdio, like every other output, so that finish() sees a failed
// write (CLI11's app.exit() would flush std::cout on its own and lose the reason).
int print(const std::string& text) {
  std::fputs(text.c_str(), stdout);
  return finish(0);
}

}  // namespace

int main(int argc, char** argv) {
  hold_closed_std_fds();
  CLI::App app{"gsa: long-context LLM inference with Geometric Sparse Attention"};
  app.name("gsa");
  app.require_subcommand(0, 1);
  app.option_defaults()->always_capture_default();  // --help shows each option's default
  app.set_help_all_flag("--help-all", "help for every subcommand");
  app.set_version_flag("--version", kVersion, "print the version and exit");
  std::string info_model;
  auto* info = app.add_subcommand("info", "show a model's architecture, tokenizer and tensors");
  info->add_option("model", info_model, "GGUF file or model name")->default_str("smollm2-135m");
  gsa::cli::Command generate = gsa::cli::add_generate(app);
  gsa::cli::Command bench = gsa::cli::add_bench(app);
  gsa::cli::Command eval = gsa::cli::add_eval(app);
  auto* version = app.add_subcommand("version", "print the version");
  gsa::cli::Command help = gsa::cli::add_help(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    return print(app.help());  // the help of the subcommand it follows
  } catch (const CLI::CallForAllHelp&) {
    return print(app.help("", CLI::AppFormatMode::All));
  } catch (const CLI::CallForVersion&) {
    return print(std::string(kVersion) + "\n");
  } catch (const CLI::ExtrasError& e) {
    return extras_error(app, e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "gsa: %s (see gsa --help)\n", e.what());
    return 2;
  }
  try {
    if (info->parsed()) return finish(gsa::cli::run_info(info, info_model));
    if (generate.app->parsed()) return finish(generate.run());
    if (bench.app->parsed()) return finish(bench.run());
    if (eval.app->parsed()) return finish(eval.run());
    if (version->parsed()) return print(std::string(kVersion) + "\n");
    if (help.app->parsed()) return finish(help.run());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gsa: %s\n", e.what());
    return 1;
  }
  return print(app.help());  // no subcommand: the help
}
