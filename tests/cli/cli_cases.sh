#!/usr/bin/env bash
# gsa command checks that need more than one command line's exit status and stderr: help and
# version output, stdin prompts, write errors on stdout, the --ctx warning, docs/KNOBS.md, the
# seed of sampled runs, -v progress, escaped metadata. Cases marked "model" run SmolLM2-135M and
# exit 77 (CTest: skipped) when it is missing.
# Usage: cli_cases.sh GSA_BINARY CASE [ARG]   (ARG: knobs_doc: docs/KNOBS.md;
#        info_escapes_metadata: the odd_metadata_gguf helper)
set -uo pipefail
gsa=$1
case_name=$2
arg=${3:-}
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
    no_default='^ *(-p,--prompt|-f,--file|--batch|--system|--chat-template|--stop|--sparse-config|--kv-offload-dir|--shape|--needle|--question|--answer|--label|-o,--out|--cases|--budgets|--tasks) '
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
              '--representation TEXT.*=quant( |$)' '--budget-ratio FLOAT=0.3( |$)' '-m,--model TEXT=smollm2-135m'; do
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
  knobs_doc)
    # docs/KNOBS.md is generated; a knob table change must regenerate it.
    run help knobs --markdown
    expect_rc 0
    expect_err_lines 0
    diff -u "$arg" "$tmp/out" >"$tmp/diff" ||
      { cat "$tmp/diff"; fail "$arg differs from 'gsa help knobs --markdown' (regenerate it: gsa help knobs --markdown > docs/KNOBS.md)"; }
    run help knobs
    expect_rc 0
    expect_out '^  --budget-tokens +budget_tokens +int +default 0 +>= 0$'
    run help
    expect_rc 0
    expect_out '^Usage: gsa '
    ;;
  info_escapes_metadata)
    # general.name is "ok", ESC "[1m", U+00E9, BEL, 0xff: escaped but for the text and the
    # UTF-8 letter, with the reason; no raw control byte reaches stdout.
    "$arg" "$tmp/odd.gguf" || fail "cannot write the test GGUF"
    run info "$tmp/odd.gguf"
    expect_rc 0
    expect_out '^name: +ok\\x1b\[1m'$'\xc3\xa9''\\x07\\xff \(non-printable bytes shown escaped\)$'
    LC_ALL=C grep -q $'[\x01-\x08\x0b-\x1f\x7f\xff]' "$tmp/out" && fail "a control byte reached stdout"
    expect_out '^architecture: +llama$'
    ;;
  seed)
    need_model
    # Sampling without --seed: a new random seed each run, printed with -v; given back with
    # --seed it repeats the run. Greedy decoding prints no seed.
    gen=(generate -p "Once upon a time" -n 6 --temp 0.9)
    run "${gen[@]}" -v
    expect_rc 0
    expect_err '^gsa: seed [0-9]+ \(random; --seed repeats this run\)$'
    seed1=$(sed -n 's/^gsa: seed \([0-9]*\) .*/\1/p' "$tmp/err")
    cp "$tmp/out" "$tmp/out1"
    run "${gen[@]}" -v
    seed2=$(sed -n 's/^gsa: seed \([0-9]*\) .*/\1/p' "$tmp/err")
    [ -n "$seed1" ] && [ "$seed1" != "$seed2" ] || fail "two runs without --seed used seeds '$seed1' and '$seed2'"
    run "${gen[@]}" -v --seed "$seed1"
    expect_rc 0
    expect_err "^gsa: seed $seed1\$"
    cmp -s "$tmp/out" "$tmp/out1" || fail "--seed $seed1 did not repeat the run"
    run "${gen[@]}"
    grep -q 'seed' "$tmp/err" && fail "a seed line without -v"
    run generate -p "Once upon a time" -n 2 -v
    expect_rc 0
    grep -q 'seed' "$tmp/err" && fail "a seed line for greedy decoding"
    ;;
  verbose_progress)
    need_model
    # -v: the model load, the attention configuration, and prefill progress for a long prompt
    # (stderr is not a terminal here: one line per quarter).
    for i in $(seq 220); do printf 'The quick brown fox jumps over the lazy dog. '; done >"$tmp/long.txt"
    run generate -f "$tmp/long.txt" -n 1 -v --prefill-chunk 256
    expect_rc 0
    expect_err '^gsa: loading model .*SmolLM2-135M-Instruct\.Q4_1\.gguf \([0-9.]+ MiB\) on cpu$'
    expect_err '^gsa: model loaded in [0-9.]+ s: llama, 30 layers, [0-9.]+ M parameters'
    expect_err '^gsa: dense: full attention \(--sparse none\)$'
    # With 256-token chunks every quarter gets its line, the first once 25% is passed.
    [ "$(grep -cE '^gsa: prefill [0-9]+/[0-9]+ tokens \([0-9]+%, [0-9.]+ s\)$' "$tmp/err")" -eq 4 ] ||
      fail "expected 4 prefill lines"
    grep '^gsa: prefill' "$tmp/err" | head -1 | grep -qE '\((2[5-9]|3[0-9])%' || fail "first prefill line not at 25%"
    grep '^gsa: prefill' "$tmp/err" | tail -1 | grep -qE ' ([0-9]+)/\1 tokens \(100%' || fail "last prefill line not at 100%"
    # On a terminal (util-linux script gives one): a bar redrawn with \r, ending at 100%.
    if script -qec true /dev/null >/dev/null 2>&1; then
      script -qec "'$gsa' generate -f '$tmp/long.txt' -n 1 -v >/dev/null" "$tmp/tty.log" >/dev/null 2>&1 </dev/null ||
        fail "generate on a terminal failed"
      grep -q $'\rgsa: prefill \\[#*\\.*\\] [0-9]*/[0-9]* tokens' "$tmp/tty.log" || fail "no progress bar on a terminal"
      grep -qE '\] ([0-9]+)/\1 tokens 100%, [0-9.]+ s' "$tmp/tty.log" || fail "the bar does not end at 100%"
    fi
    run generate -p hi -n 1 -v --sparse gsa --budget-tokens 1024
    expect_rc 0
    expect_err '^gsa: sparse: gsa quant, budget 1024 tokens, 1 sink \+ 2 local blocks, min_context 8400: prompts below it decode densely$'
    grep -q '^gsa: prefill' "$tmp/err" && fail "prefill progress for a short prompt"
    run generate -f "$tmp/long.txt" -n 1
    grep -q '^gsa: prefill\|^gsa: loading' "$tmp/err" && fail "progress without -v"
    ;;
  *)
    echo "unknown case $case_name"
    exit 2
    ;;
esac
echo "ok: $case_name"
