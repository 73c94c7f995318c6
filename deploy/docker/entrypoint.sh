#!/bin/sh
# Entry point of every image (run under tini): seed the model store, then exec the command.
#
#   RAMAN_SEED_MODELS=true (default)  copy the model versions baked into the image
#                                     (/opt/raman/default-models/<name>/<version>/) into
#                                     $RAMAN_MODEL_STORE when that version is not there yet.
#                                     Existing versions are never touched.
#   docker run IMAGE seed-models      only seed, then exit (an init container can do this).
set -eu

if [ "${1:-}" = "seed-models" ]; then
    exec python /opt/raman/bin/seed_models.py
fi

if [ "${RAMAN_SEED_MODELS:-true}" = "true" ]; then
    python /opt/raman/bin/seed_models.py
fi

exec "$@"
