#!/usr/bin/env bash
# Regenerate everything under data/, and the zoo tokenizer shipped in the package
# (moezoo/assets/tokenizer), with the `moezoo data` commands (about a minute on 2 cores).
# The same seeds give the same bytes (on the same Python version, for text/ and the tokenizer).
set -euo pipefail
cd "$(dirname "$0")"
moezoo="${MOEZOO:-moezoo}"

rm -rf shapes-vqa digits-vqa tones-qa text
"$moezoo" data build shapes-vqa --out shapes-vqa --seed 0 --n-train 5000 --n-val 200 --n-test 500 --n-captions 500 --samples-per-shard 500
"$moezoo" data build digits-vqa --out digits-vqa --seed 0 --n-train 1200 --n-val 100 --n-test 400 --n-captions 200
"$moezoo" data build tones-qa --out tones-qa --seed 0 --n-train 2000 --n-val 100 --n-test 300 --samples-per-shard 500
"$moezoo" data build text --out text --seed 0 --n-train 1500 --n-val 100 --samples-per-shard 250
# The tokenizer learns from the text corpus and from the VQA questions and answers.
# The package ships it, so that `moezoo.create_model` works from an installed wheel.
"$moezoo" data tokenizer --corpus text shapes-vqa digits-vqa --out ../moezoo/assets/tokenizer --vocab-size 4096
du -sh .
