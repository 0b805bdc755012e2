#!/usr/bin/env bash
# The avatar from nothing to a teacher (docs/models.md, "Avatars"): synthesise the set, train the video
# autoencoder, encode the latent episodes, train the bidirectional teacher. Every stage resumes: run the
# script again with the same OUT to continue. Sizes come from the environment:
#   OUT=runs/avatar DATA=data/avatar TRAIN_CLIPS=400 EVAL_CLIPS=40 AE_STEPS=1500 TEACHER_STEPS=3000 \
#   TEACHER_HOURS=0 (0 = no time limit) THREADS=1 bash scripts/train_avatar.sh
# Next stages (not run here): ode_init and self_forcing from the teacher, as docs/world.md ran them.
set -euo pipefail
OUT=${OUT:-runs/avatar}
DATA=${DATA:-data/avatar}
TRAIN_CLIPS=${TRAIN_CLIPS:-400}
EVAL_CLIPS=${EVAL_CLIPS:-40}
AE_STEPS=${AE_STEPS:-1500}
TEACHER_STEPS=${TEACHER_STEPS:-3000}
TEACHER_HOURS=${TEACHER_HOURS:-0}
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
echo "== done $(date -u +%T)"
