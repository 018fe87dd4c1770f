#!/bin/sh
# Container entrypoint: environment variables become `diffuserve serve` options; arguments
# given to `docker run IMAGE ...` come after them, so an explicit flag always wins.
#
#   DIFFUSERVE_MODEL               checkpoint folder (mount it under /models); empty: built-in model
#   DIFFUSERVE_HOST / _PORT        listen address (default 0.0.0.0:8000)
#   DIFFUSERVE_SERVED_MODEL_NAME   name clients put in "model"
#   DIFFUSERVE_API_KEY             require "Authorization: Bearer KEY" (pass at run time, never bake it)
#   DIFFUSERVE_MAX_QUEUE           requests waiting before 429
#   DIFFUSERVE_EXTRA_ARGS          any other serve flags, split on spaces
set -eu

if [ "${1:-}" != "" ] && [ "${1#-}" = "$1" ]; then
    # First argument is not a flag: run that command instead (e.g. `bench`, `sh`).
    if command -v "$1" >/dev/null 2>&1; then
        exec "$@"
    fi
    exec diffuserve "$@"
fi

# Build the option list in reverse, each `set --` putting one option before the user's args.
if [ -n "${DIFFUSERVE_EXTRA_ARGS:-}" ]; then
    # shellcheck disable=SC2086  # splitting on spaces is the documented meaning
    set -- ${DIFFUSERVE_EXTRA_ARGS} "$@"
fi
if [ -n "${DIFFUSERVE_MAX_QUEUE:-}" ]; then
    set -- --max-queue "${DIFFUSERVE_MAX_QUEUE}" "$@"
fi
# DIFFUSERVE_API_KEY is read by `diffuserve serve` itself, so the key never shows in `ps`.
if [ -n "${DIFFUSERVE_SERVED_MODEL_NAME:-}" ]; then
    set -- --served-model-name "${DIFFUSERVE_SERVED_MODEL_NAME}" "$@"
fi
if [ -n "${DIFFUSERVE_MODEL:-}" ]; then
    set -- --model "${DIFFUSERVE_MODEL}" "$@"
fi
set -- serve --host "${DIFFUSERVE_HOST:-0.0.0.0}" --port "${DIFFUSERVE_PORT:-8000}" "$@"

if [ "${DIFFUSERVE_DRY_RUN:-0}" = "1" ]; then
    # For tests: print the command, one argument a line, instead of running it.
    printf '%s\n' diffuserve "$@"
    exit 0
fi
exec diffuserve "$@"
