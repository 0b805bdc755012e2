#!/usr/bin/env bash
# Train the `world` model's three stages on one GPU inside a fixed wall-clock budget, and pack the weights
# so they can be brought back (docs/world.md). By default the pure Self-Forcing chain: an ar_teacher trained
# with action dropout (so its score can be guided by the keys) -> ode_init on its causal trajectories ->
# Self-Forcing DMD with action classifier-free guidance, primed with SF_CONTEXT_BLOCKS real blocks, the
# exit step drawn per block (every denoising step trained), the critic on fresh rollouts.
#
#   OUT=/path/to/results BUDGET_S=520 bash scripts/gpu_train_world.sh
#   # the same chain on the CPU (the shipped student's weights as the ar_teacher stage's start; 45 minutes):
#   DEVICE=cpu BUDGET_S=3600 TEACHER_INIT=streamgen/weights/world TEACHER_BATCH=8 TEACHER_LR=1e-4 TEACHER_WARMUP=20 \
#     TEACHER_EMA=0.99 TEACHER_SHARE=35 SF_BATCH=2 ODE_PAIRS=64 ODE_BATCH=8 SF_CKPT_EVERY=10 \
#     AE=streamgen/weights/world OUT=runs/sfworld/out RUN=runs/sfworld/chain bash scripts/gpu_train_world.sh
#   # the whole budget on rollout regression from an earlier student (no teacher or ODE stage):
#   OUT=/path/to/results BUDGET_S=520 START_STUDENT=runs/s3/cand_rr2 FINAL_STAGE=rollout_regression bash scripts/gpu_train_world.sh
#
# Needs: a python with torch (CUDA), safetensors, numpy, tqdm (no install: the package is laid out under
# a temp dir as setup.py maps it), the dataset (DATA, default data/atari/pong) and the autoencoders (AE,
# default runs/ae_pong). Every stage has its own share of the budget and stops with a checkpoint when it
# is spent (train.time_limit_s); after each stage its weights are packed into $OUT/<stage>.tar (EMA and
# raw weights with config.json, no optimiser states), so a run cut short still returns what it finished.
# DEVICE=cpu with small budgets runs the same script end to end on a CPU (a smoke run).
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
OUT=${OUT:-runs/gpu_world_out}
RUN=${RUN:-runs/gpu_world}
AE=${AE:-runs/ae_pong}
DATA=${DATA:-data/atari/pong}
DEVICE=${DEVICE:-cuda}
BUDGET_S=${BUDGET_S:-520}
TEACHER_BATCH=${TEACHER_BATCH:-256}
SF_BATCH=${SF_BATCH:-32}
ODE_PAIRS=${ODE_PAIRS:-1024}
SF_CKPT_EVERY=${SF_CKPT_EVERY:-100}
# Continuing from an earlier teacher (a weights folder, e.g. one packed by a previous run) instead of from scratch:
TEACHER_INIT=${TEACHER_INIT:-}
TEACHER_LR=${TEACHER_LR:-8e-4}
TEACHER_WARMUP=${TEACHER_WARMUP:-300}
TEACHER_SHARE=${TEACHER_SHARE:-55} # percent of the budget
ODE_SHARE=${ODE_SHARE:-30}         # percent of what is left after the teacher
MOTION_WEIGHT=${MOTION_WEIGHT:-0}  # train.motion_weight of the teacher
TEACHER_COMPILE=${TEACHER_COMPILE:-false} # train.compile of the teacher (not yet measured on a GPU)
TRAIN_DTYPE=${TRAIN_DTYPE:-float32}       # train.dtype of every stage (bfloat16: autocast)
PROBE_S=${PROBE_S:-20}             # the teacher's first segment, which measures its step rate
FINAL_STAGE=${FINAL_STAGE:-self_forcing} # or rollout_regression (the student's rollouts against the recording)
START_STUDENT=${START_STUDENT:-}   # a student's weights folder: skip the teacher and ODE stages, start the final one from it
RR_BATCH=${RR_BATCH:-64}           # rollout_regression: clips of 16 latent frames (3 real blocks + 5 generated)
RR_LR=${RR_LR:-1e-4}
RR_DMD=${RR_DMD:-0}                # regression.dmd_weight (> 0 needs a teacher: the teacher stage or TEACHER_INIT)
RR_AUDIO=${RR_AUDIO:-0.5}          # regression.audio_weight (regression toward the recording's sound quiets it; DMD keeps it alive)
RR_FOCUS=${RR_FOCUS:-0}            # regression.focus_weight on the player's columns (Pong's paddle: RR_FOCUS_COLS)
RR_FOCUS_COLS=${RR_FOCUS_COLS:-[0.85,0.925]}
RR_AUDIO_CHANGE=${RR_AUDIO_CHANGE:-0}  # regression.audio_change_weight (weighs a beep's onset and end: keeps the beeps)
TEACHER_EMA=${TEACHER_EMA:-0.999}  # train.ema_decay of the teacher (a short CPU run: 0.99; at 0.999, 200 steps from
                                   # TEACHER_INIT leave its EMA mostly the starting weights)
ACTION_DROPOUT=${ACTION_DROPOUT:-0.1}  # data.action_dropout of the teacher: it learns the null action, for action guidance
TEACHER_ATTENTION=${TEACHER_ATTENTION:-auto} # dmd.teacher_attention (auto: the teacher's record; older teachers: teacher_forcing)
ODE_BATCH=${ODE_BATCH:-64}
SF_GUIDANCE=${SF_GUIDANCE:-3}      # dmd.guidance_scale: action CFG (the world has no text)
SF_CONTEXT_BLOCKS=${SF_CONTEXT_BLOCKS:-3} # dmd.context_blocks: 12 real frames primed, enough to show a press from rest (the phase)
SF_FRAMES=${SF_FRAMES:-16}         # data.num_frames of the Self-Forcing clips: 3 real blocks + 5 generated
SF_LR=${SF_LR:-2e-5}
SF_CRITIC_LR=${SF_CRITIC_LR:-1e-4}
SF_EXIT_PER=${SF_EXIT_PER:-block}  # dmd.exit_per: block (every step trained in every block) or rollout
SF_REGRESSION=${SF_REGRESSION:-0}  # dmd.regression_weight: 0 = pure Self-Forcing; > 0 anchors the rollout to the recording
case "$FINAL_STAGE" in self_forcing|rollout_regression) ;; *) echo "FINAL_STAGE=$FINAL_STAGE: use self_forcing or rollout_regression" >&2; exit 2 ;; esac
if [ -n "$START_STUDENT" ] && { [ "$FINAL_STAGE" = self_forcing ] || [ "$RR_DMD" != 0 ]; } && [ -z "$TEACHER_INIT" ]; then
  echo "START_STUDENT skips the teacher stage: $FINAL_STAGE with RR_DMD=$RR_DMD needs TEACHER_INIT" >&2; exit 2
fi
export PYTHONUNBUFFERED=1 PYTHONSAFEPATH=1 # (no current directory on sys.path: ./streamgen lacks training/)
mkdir -p "$OUT" "$RUN"
start=$(date +%s)
left() { echo $((BUDGET_S - ($(date +%s) - start))); }
log() { echo "[gpu_train_world $(($(date +%s) - start))s] $*" | tee -a "$OUT/progress.txt" >&2; }

# The installed layout without pip: kernels/, server/, training/ live inside the streamgen package.
source scripts/package_layout.sh
SITE=$(layout_package) || { log "could not lay out the package"; exit 1; }
export PYTHONPATH="$SITE"
"$PY" -c 'import torch, json; print(json.dumps({"torch": torch.__version__, "cuda": torch.cuda.is_available(),
  "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}))' | tee -a "$OUT/progress.txt"

train() { # train RECIPE RUN_DIR ARGS... : streamgen train without the console script
  "$PY" -m streamgen.training.cli "$1" --out "$2" --no-progress "${@:3}" 2>&1 | tee -a "$OUT/train.log" | grep -v "^step=" | tail -n 5
}

pack() { # pack NAME PARTS RUN_DIR [STEP_FOLDERS...]: weights (PARTS: "ema student") of the latest or named steps
  local name=$1 parts=$2 dir=$3
  shift 3
  local steps=("$@")
  if [ ${#steps[@]} -eq 0 ]; then
    steps=("$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["folder"])' "$dir/checkpoints/latest")")
  fi
  local paths=()
  for s in "${steps[@]}"; do
    for part in $parts; do
      [ -d "$dir/checkpoints/$s/$part" ] && paths+=("checkpoints/$s/$part")
    done
  done
  paths+=(log.jsonl run_config.json)
  tar -cf "$OUT/$name.tar" -C "$dir" "${paths[@]}" && log "packed $name: ${steps[*]} ($(du -h "$OUT/$name.tar" | cut -f1))"
}

log "encode the episodes with $AE"
"$PY" -m streamgen.training.data.encode_world --data "$DATA" --ae "$AE" --out "$RUN/latents" --device "$DEVICE" \
  >>"$OUT/train.log" 2>&1 || { log "encoding failed"; tail -n 20 "$OUT/train.log"; exit 1; }
log "encoded $(ls "$RUN/latents/train" | wc -l) training episodes"

COMMON=(--data "$RUN/latents/train" --set model=world --set train.device="$DEVICE" --set train.log_every=50
  --set train.dtype="$TRAIN_DTYPE")

TEACHER=${TEACHER_INIT:-none}
STUDENT=$START_STUDENT
if [ -z "$START_STUDENT" ]; then
# 1. The autoregressive teacher: TEACHER_SHARE % of the budget. A first segment of PROBE_S seconds measures
#    the step rate (between its last two log lines, so a compilation in the first step does not count), so
#    the cosine schedule can end where the budget does (the resumed segment keeps every state).
T_TEACHER=$(($(left) * TEACHER_SHARE / 100))
log "ar_teacher: ${T_TEACHER}s"
TEACHER_SET=(--set train.batch="$TEACHER_BATCH" --set train.lr="$TEACHER_LR" --set train.warmup="$TEACHER_WARMUP"
  --set train.lr_schedule=cosine --set train.min_lr_ratio=0.05 --set train.ema_decay="$TEACHER_EMA" --set train.ema_start=500
  --set train.checkpoint_every=1000 --set train.motion_weight="$MOTION_WEIGHT" --set train.compile="$TEACHER_COMPILE"
  --set data.action_dropout="$ACTION_DROPOUT")
[ -n "$TEACHER_INIT" ] && TEACHER_SET+=(--set init.student="$TEACHER_INIT" --set train.ema_start=0)
t_teacher=$(date +%s)
train ar_teacher "$RUN/teacher" "${COMMON[@]}" "${TEACHER_SET[@]}" --steps 1000000 --set train.time_limit_s="$PROBE_S" --set train.log_every=10
done_steps=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["step"])' "$RUN/teacher/checkpoints/latest")
rate=$("$PY" - "$RUN/teacher/log.jsonl" "$TEACHER_BATCH" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"seconds"' in l]
if len(rows) < 2:  # the probe ended before its second log line
    print(rows[-1]["samples_per_s"] if rows else 0)
else:
    (a, b), batch = rows[-2:], int(sys.argv[2])
    print((b["step"] - a["step"]) * batch / max(b["seconds"] - a["seconds"], 1e-9))
EOF
)
remaining=$((T_TEACHER - ($(date +%s) - t_teacher) - 10)) # minus the measured segment and one restart
[ "$TEACHER_COMPILE" = true ] && remaining=$((remaining - 60)) # the resumed process compiles again
total=$("$PY" -c "print(max($done_steps, int($done_steps + max($rate, 1) / $TEACHER_BATCH * $remaining * 0.95)))")
if [ "$total" -gt "$done_steps" ] && [ "$remaining" -gt 0 ]; then
  log "ar_teacher: $done_steps steps at $rate samples/s; resuming to $total steps"
  train ar_teacher "$RUN/teacher" --resume "$RUN/teacher" "${COMMON[@]}" "${TEACHER_SET[@]}" --steps "$total" \
    --set train.time_limit_s="$remaining"
else # the probe used the teacher's share (a slow or busy machine): keep its checkpoint
  log "ar_teacher: $done_steps steps at $rate samples/s; no time left to resume"
fi
pack teacher "ema student" "$RUN/teacher"

# 2. ODE initialisation from the teacher's own causal trajectories: 30 % of what is left.
T_ODE=$(($(left) * ODE_SHARE / 100))
log "ode_init: ${T_ODE}s"
train ode_init "$RUN/ode" "${COMMON[@]}" --steps 100000 --set train.time_limit_s="$T_ODE" \
  --set init.teacher="$RUN/teacher" --set init.student="$RUN/teacher" --set ode.teacher_kind=causal \
  --set ode.substeps=4 --set ode.guidance_scale=1 --set ode.num_pairs="$ODE_PAIRS" --set train.batch="$ODE_BATCH" \
  --set train.lr=2e-4 --set train.ema_decay=0.99 --set train.ema_start=100 --set train.checkpoint_every=1000
pack ode "ema student" "$RUN/ode"
TEACHER=$RUN/teacher
STUDENT=$RUN/ode
fi

# 3. Self-Forcing (DMD) or rollout regression from the ODE student (or START_STUDENT), keeping a checkpoint
#    every SF_CKPT_EVERY steps: the rest, less 15 s for packing. At most 6 EMA checkpoints (evenly spaced,
#    the last included) come back, in two files named after the stage (sf_a/sf_b or rr_a/rr_b; each must
#    stay under 16 MB), and for Self-Forcing the last step's critic (sf_critic).
T_SF=$(($(left) - 15))
if [ "$T_SF" -ge 20 ]; then
  log "$FINAL_STAGE: ${T_SF}s"
  if [ "$FINAL_STAGE" = self_forcing ]; then
    tag=sf
    train self_forcing "$RUN/sf" "${COMMON[@]}" --steps 100000 --set train.time_limit_s="$T_SF" \
      --set init.teacher="$TEACHER" --set init.student="$STUDENT" --set dmd.guidance_scale="$SF_GUIDANCE" --set dmd.shift=3 \
      --set dmd.teacher_attention="$TEACHER_ATTENTION" --set dmd.context_blocks="$SF_CONTEXT_BLOCKS" \
      --set data.num_frames="$SF_FRAMES" --set dmd.exit_per="$SF_EXIT_PER" --set dmd.regression_weight="$SF_REGRESSION" \
      --set dmd.critic_steps=2 --set train.batch="$SF_BATCH" --set train.lr="$SF_LR" --set dmd.critic_lr="$SF_CRITIC_LR" \
      --set train.ema_decay=0.95 --set train.ema_start=20 --set train.checkpoint_every="$SF_CKPT_EVERY" \
      --set train.keep_checkpoints=1000
  else
    tag=rr
    RR_SET=()
    [ "$RR_DMD" != 0 ] && RR_SET=(--set init.teacher="$TEACHER" --set regression.dmd_weight="$RR_DMD" --set dmd.guidance_scale=1
      --set dmd.shift=3 --set dmd.critic_lr=1e-4 --set dmd.teacher_attention="$TEACHER_ATTENTION")
    [ "$RR_FOCUS" != 0 ] && RR_SET+=(--set regression.focus_weight="$RR_FOCUS" --set regression.focus_cols="$RR_FOCUS_COLS")
    [ "$RR_AUDIO_CHANGE" != 0 ] && RR_SET+=(--set regression.audio_change_weight="$RR_AUDIO_CHANGE")
    train rollout_regression "$RUN/rr" "${COMMON[@]}" --steps 100000 --set train.time_limit_s="$T_SF" \
      --set init.student="$STUDENT" --set train.batch="$RR_BATCH" --set data.num_frames=16 --set regression.context_blocks=3 \
      --set regression.audio_weight="$RR_AUDIO" --set dmd.last_step_only=true --set train.motion_weight=3 --set train.lr="$RR_LR" \
      --set train.warmup=30 --set train.ema_decay=0.99 --set train.ema_start=50 --set train.checkpoint_every="$SF_CKPT_EVERY" \
      --set train.keep_checkpoints=1000 "${RR_SET[@]}"
  fi
  mapfile -t sf_steps < <(ls "$RUN/$tag/checkpoints" | grep '^step_' | sort | "$PY" -c '
import sys
steps = sys.stdin.read().split()
k = -(-len(steps) // 6)  # every k-th from the end, so the last is kept
print("\n".join(sorted(steps[::-1][::k][:6])))')
  half=$(((${#sf_steps[@]} + 1) / 2))
  pack "${tag}_a" ema "$RUN/$tag" "${sf_steps[@]:0:$half}"
  [ ${#sf_steps[@]} -gt "$half" ] && pack "${tag}_b" ema "$RUN/$tag" "${sf_steps[@]:$half}"
  [ "$tag" = sf ] && pack sf_critic critic "$RUN/sf"  # the last step's critic: the chain's third network, to continue from
fi

# 4. With time to spare, the GPU kernel tests (issue 6's compiled Triton checks).
if [ "$DEVICE" = cuda ] && [ "$(left)" -gt 40 ]; then
  log "kernel tests: $(($(left) - 10))s"
  timeout --kill-after=5 $(($(left) - 10)) env TRITON_INTERPRET=0 "$PY" -m pytest -m gpu tests/kernels -q -p no:cacheprovider \
    -rfEs -x >"$OUT/gpu_tests.log" 2>&1
  log "kernel tests rc=$? $(tail -n 1 "$OUT/gpu_tests.log")"
fi
log "done"
