#!/usr/bin/env bash
# gsa command checks that need more than one command line's exit status and stderr: help and
# version output, stdin prompts, write errors on stdout, the --ctx warning. Cases marked
# "model" run SmolLM2-135M and exit 77 (CTest: skipped) when it is missing.
# Usage: cli_cases.sh GSA_BINARY CASE
set -uo pipefail
gsa=$1
case_name=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
model=${GSA_MODEL_DIR:-$HOME/.cache/gsa/models}/SmolLM2-135M-Instruct.Q4_1.gguf

fail() { echo "FAIL: $*"; [ -s "$tmp/err" ] && { echo "--- stderr"; cat "$tmp/err"; }; exit 1; }
need_model() { [ -f "$model" ] || { echo "skip: $model missing (scripts/fetch-model smollm2-135m)"; exit 77; }; }
# run ARGS...: runs gsa; stdout in $tmp/out, stderr in $tmp/err, exit status in $rc.
run() { "$gsa" "$@" >"$tmp/out" 2>"$tmp/err" </dev/null; rc=$?; }
expect_rc() { [ "$rc" -eq "$1" ] || fail "exit status $rc, expected $1"; }
expect_out() { grep -Eq -- "$1" "$tmp/out" || { cat "$tmp/out"; fail "stdout does not match: $1"; }; }
expect_err() { grep -Eq -- "$1" "$tmp/err" || fail "stderr does not match: $1"; }
expect_err_lines() {
  local n
  n=$(grep -c . "$tmp/err")
  [ "$n" -eq "$1" ] || fail "$n lines on stderr, expected $1"
}
# The "prompt N tokens" count of a generate run's stats line.
prompt_tokens() { sed -n 's/.*| prompt \([0-9]*\) tokens.*/\1/p' "$tmp/err"; }

case "$case_name" in
  version)
    for args in --version version; do
      run $args
      expect_rc 0
      expect_out '^gsa [0-9]+\.[0-9]+'
      expect_err_lines 0
    done
    ;;
  bare_prints_help)
    run
    expect_rc 0
    expect_out '^Usage: gsa '
    for sub in info generate bench eval version; do expect_out "^  $sub "; done
    expect_err_lines 0
    run eval
    expect_rc 0
    expect_out '^Usage: gsa eval '
    expect_out '^  niah '
    expect_out '^  ruler '
    expect_err_lines 0
    ;;
  help_shows_defaults)
    # Every option that takes a value shows its default ("=..."), except those whose default is
    # "none given".
    no_default='^ *(-p,--prompt|-f,--file|--batch|--system|--chat-template|--stop|--sparse-config|--shape|--needle|--question|--answer|--label|-o,--out|--cases|--budgets|--tasks) '
    for sub in generate bench "eval niah" "eval ruler"; do
      run $sub --help
      expect_rc 0
      # Option lines: "  --name TYPE..." (a long description may wrap onto the next line).
      bad=$(grep -E '^  -' "$tmp/out" | grep -E ' (INT|UINT|FLOAT|TEXT)' | grep -v '=' | grep -Ev -- "$no_default")
      [ -z "$bad" ] || fail "gsa $sub --help: options without a default: $bad"
    done
    run generate --help
    for re in '--temp FLOAT.*=0( |$)' '--top-p FLOAT.*=1( |$)' '-n,--n-predict INT.*=128( |$)' \
              '--block-size INT=128( |$)' '--sink-blocks INT=1( |$)' '--local-blocks INT=2( |$)' \
              '--representation TEXT.*=minmax( |$)' '--budget-ratio FLOAT=0.3( |$)' '-m,--model TEXT=smollm2-135m'; do
      expect_out "$re"
    done
    run bench --help
    expect_out '--warmup INT.*=2( |$)'
    expect_out '--ctx INT.*=512( |$)'
    run eval niah --help
    expect_out '--contexts INT.*=\[1024,2048,4096,7680\]'
    ;;
  stdout_write_errors)
    # A full or closed stdout: exit 1 with one line on stderr.
    for args in --version --help version; do
      "$gsa" $args >/dev/full 2>"$tmp/err"
      rc=$?
      expect_rc 1
      expect_err_lines 1
      expect_err '^gsa: cannot write to stdout: No space left on device$'
      "$gsa" $args >&- 2>"$tmp/err"
      rc=$?
      expect_rc 1
      expect_err_lines 1
      expect_err '^gsa: cannot write to stdout: '
    done
    ;;
  stdout_write_errors_model)
    need_model
    "$gsa" info >/dev/full 2>"$tmp/err"
    rc=$?
    expect_rc 1
    expect_err_lines 1
    expect_err '^gsa: cannot write to stdout: No space left on device$'
    for extra in "" --no-stream; do
      "$gsa" generate -p "Once upon a time" -n 8 --ignore-eos $extra >/dev/full 2>"$tmp/err"
      rc=$?
      expect_rc 1
      expect_err_lines 1
      expect_err '^gsa: cannot write to stdout: No space left on device$'
    done
    ;;
  stdin_prompt)
    need_model
    text="The capital of France is"
    run generate -p "$text" -n 1
    expect_rc 0
    want=$(prompt_tokens)
    [ -n "$want" ] || fail "no prompt token count on stderr"
    printf '%s' "$text" | "$gsa" generate -f - -n 1 >"$tmp/out" 2>"$tmp/err"
    rc=$?
    expect_rc 0
    [ "$(prompt_tokens)" = "$want" ] || fail "-f - read $(prompt_tokens) prompt tokens, -p $want"
    printf 'one\n\ntwo\n' | "$gsa" generate --batch - -n 1 >"$tmp/out" 2>"$tmp/err"
    rc=$?
    expect_rc 0
    expect_out '^=== prompt 1 '
    grep -q '^=== prompt 2 ' "$tmp/out" && fail "--batch - read more than 2 prompts"
    ;;
  ctx_warning)
    need_model
    run generate -p hi -n 1 --ctx 16384 --kv-tokens 512
    expect_rc 0
    expect_err "^gsa: warning: --ctx 16384 is above the model's trained context of 8192 tokens"
    [ "$(grep -c 'warning' "$tmp/err")" -eq 1 ] || fail "expected one warning line"
    run generate -p hi -n 1 --ctx 4096
    expect_rc 0
    grep -q warning "$tmp/err" && fail "warning at --ctx 4096"
    ;;
  *)
    echo "unknown case $case_name"
    exit 2
    ;;
esac
echo "ok: $case_name"
