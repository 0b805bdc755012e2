#!/usr/bin/env bash
# The avatar from nothing to a causal student (docs/models.md, "Avatars"): synthesise the set, train the
# video autoencoder, encode the latent episodes (16 latent frames for the teacher and the ODE stage, 10 for
# Self-Forcing), train the bidirectional teacher, the ODE initialisation of the causal student from it,
# then the Self-Forcing stage (its own rollouts: regression onto the real frames + the teacher's DMD guided
# by the speech; training/avatar_recipes.py). Every stage resumes: run the script again with the same OUT
# to continue. Shipping is a choice made on the val split (streamgen evaluate --model ...; then
# python -m streamgen.training.ship_avatar). Sizes come from the environment:
#   OUT=runs/avatar DATA=data/avatar TRAIN_CLIPS=400 EVAL_CLIPS=40 AE_STEPS=1500 TEACHER_STEPS=3000 \
#   TEACHER_HOURS=0 (0 = no time limit) ODE_STEPS=300 SF_STEPS=200 THREADS=1 bash scripts/train_avatar.sh
set -euo pipefail
OUT=${OUT:-runs/avatar}
DATA=${DATA:-data/avatar}
TRAIN_CLIPS=${TRAIN_CLIPS:-400}
EVAL_CLIPS=${EVAL_CLIPS:-40}
AE_STEPS=${AE_STEPS:-1500}
TEACHER_STEPS=${TEACHER_STEPS:-3000}
TEACHER_HOURS=${TEACHER_HOURS:-0}
ODE_STEPS=${ODE_STEPS:-300}
SF_STEPS=${SF_STEPS:-200}
THREADS=${THREADS:-1}
export OMP_NUM_THREADS=$THREADS
mkdir -p "$OUT"
echo "== data ($TRAIN_CLIPS / $EVAL_CLIPS / $EVAL_CLIPS clips) $(date -u +%T)"
python -m streamgen.training.data.avatar --out "$DATA" --train "$TRAIN_CLIPS" --val "$EVAL_CLIPS" --test "$EVAL_CLIPS"
echo "== video autoencoder ($AE_STEPS steps) $(date -u +%T)"
if [ ! -f "$OUT/ae/video_ae.safetensors" ]; then
  python -m streamgen.training.avatar_ae --data "$DATA" --out "$OUT/ae" --steps "$AE_STEPS" --threads "$THREADS"
fi
echo "== latents $(date -u +%T)"
if [ ! -d "$OUT/latents/test" ]; then
  python -m streamgen.training.data.avatar_latents --data "$DATA" --ae "$OUT/ae/video_ae.safetensors" --out "$OUT/latents.partial"
  mv "$OUT/latents.partial" "$OUT/latents"
fi
if [ ! -d "$OUT/latents10/train" ]; then
  python -m streamgen.training.data.avatar_latents --data "$DATA" --ae "$OUT/ae/video_ae.safetensors" --out "$OUT/latents10.partial" \
    --clip-frames 10
  mv "$OUT/latents10.partial" "$OUT/latents10"
fi
echo "== teacher ($TEACHER_STEPS steps) $(date -u +%T)"
LIMIT=$(python -c "print(int(float('$TEACHER_HOURS') * 3600))")
SETS=$(python -m streamgen.training.avatar_recipes teacher)
if [ -f "$OUT/teacher/checkpoints/latest" ]; then
  streamgen train teacher --resume "$OUT/teacher" --steps "$TEACHER_STEPS" --set train.time_limit_s="$LIMIT" --no-progress
else
  # shellcheck disable=SC2086
  streamgen train teacher $SETS --data "$OUT/latents/train" --out "$OUT/teacher" --steps "$TEACHER_STEPS" \
    --set train.time_limit_s="$LIMIT" --no-progress
fi
# stage NAME RECIPE DATA STEPS [--set ...]: a fresh run of RECIPE, or the resumed one
stage() {
  local out=$OUT/$1 recipe=$2 data=$3 steps=$4
  shift 4
  echo "== $recipe ($steps steps) $(date -u +%T)"
  if [ -f "$out/checkpoints/latest" ]; then
    streamgen train "$recipe" --resume "$out" --steps "$steps" --no-progress
  else
    # shellcheck disable=SC2046
    streamgen train "$recipe" $(python -m streamgen.training.avatar_recipes "$recipe") --data "$data" --out "$out" \
      --steps "$steps" --no-progress "$@"
  fi
}
stage ode ode_init "$OUT/latents/train" "$ODE_STEPS" --set init.teacher="$OUT/teacher" --set init.student="$OUT/teacher"
stage sf rollout_regression "$OUT/latents10/train" "$SF_STEPS" --set init.teacher="$OUT/teacher" --set init.student="$OUT/ode"
echo "== done $(date -u +%T)"
