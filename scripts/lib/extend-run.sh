# Sourced by the experiment scripts: what happens to a run directory's evaluations.
# `extension DIR STEPS` prints "--extend" when DIR holds a run
# (finished or not) of fewer than STEPS steps, after moving a finished run's evaluation aside
# (eval.json -> eval-step-N.json, eval.log -> eval-step-N.log, samples.png -> samples-step-N.png,
# eval-seed-E.json -> eval-seed-E-step-N.json), so
# that the script trains it on with `ambient train --extend` and evaluates it again. Prints nothing
# otherwise (a run of more steps than STEPS is left as it is, with a warning on stderr).
extension() {
    local dir=$1 steps=$2 had f
    [ -f "$dir/config.json" ] || return 0
    had=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["config"]["steps"])' "$dir/config.json")
    if [ "$had" -gt "$steps" ]; then
        echo "warning: $dir has $had steps, more than STEPS=$steps; left as it is" >&2
    elif [ "$had" -lt "$steps" ]; then
        # The step the weights were written at (a run stopped by --time-limit stops short of its
        # length), as `ambient train --extend` names the kept model-step-N.safetensors.
        if [ -f "$dir/model.safetensors" ]; then
            had=$(python3 -c 'import json, struct, sys
f = open(sys.argv[1], "rb"); n = struct.unpack("<Q", f.read(8))[0]
print(json.loads(f.read(n)).get("__metadata__", {}).get("ambient.step", sys.argv[2]))' "$dir/model.safetensors" "$had")
        fi
        for f in eval.json eval.log samples.png; do
            if [ -f "$dir/$f" ]; then mv "$dir/$f" "$dir/${f%.*}-step-$had.${f##*.}"; fi
        done
        for f in "$dir"/eval-seed-*.json "$dir"/eval-seed-*.log; do   # evaluations under other sampler seeds
            b=$(basename "$f")
            # Not those an earlier extension already moved aside (eval-seed-E-step-N.json).
            if [ -f "$f" ] && [[ "$b" != *-step-* ]]; then mv "$f" "$dir/${b%.*}-step-$had.${b##*.}"; fi
        done
        echo "--extend"
    fi
}

# `evaluate_under_seeds DIR NICE`: evaluates DIR's model under every sampler seed of $EVAL_SEEDS but 0
# (that one is eval.json) into eval-seed-E.json, skipping those already written; summarize-issue15.py
# averages them. Uses the calling script's $A, $COUNT and `say`.
evaluate_under_seeds() {
    local dir=$1 nice=$2 e
    for e in $EVAL_SEEDS; do
        if [ "$e" != 0 ] && [ ! -f "$dir/eval-seed-$e.json" ]; then
            say "eval $dir, sampler seed $e"
            nice -n "$nice" "$A" eval --run "$dir" --count "$COUNT" --threads 1 --seed "$e" --out "$dir/eval-seed-$e.json" --quiet 2> "$dir/eval-seed-$e.log"
        fi
    done
}
