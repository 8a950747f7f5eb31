#!/bin/bash
# One suite's standings on the GPU machine: `im2win bench` with every method (im2win,
# im2win-tf32x3, each legacy cuDNN algorithm, torch-conv2d), --repeats 5, into
# $OUT/<dir>.tgz; prints the run's time and row counts.
# usage: IM2WIN_COMMIT=<sha> bash notes/scripts/standings.sh <dir> <bench args...>
# (without IM2WIN_COMMIT the commit is read from run_tmp/NEW_COMMIT, as the H100 runs did;
# TIMEOUT_S stops the bench, its rows so far still packed)
M=im2win,im2win-tf32x3,cudnn-IMPLICIT_GEMM,cudnn-IMPLICIT_PRECOMP_GEMM,cudnn-GEMM,cudnn-DIRECT,cudnn-FFT,cudnn-FFT_TILING,cudnn-WINOGRAD,cudnn-WINOGRAD_NONFUSED,torch-conv2d
D=$1; shift; W=/tmp/s; mkdir -p $W
start=$(date +%s)
IM2WIN_COMMIT=${IM2WIN_COMMIT:-$(cat run_tmp/NEW_COMMIT)} PYTHONPATH=src timeout -k 5 ${TIMEOUT_S:-0} python3 -m im2win.cli bench --methods $M --repeats 5 --out $W/$D "$@" > $W/$D.log 2>&1 || tail -5 $W/$D.log
echo "$D: $(( $(date +%s) - start )) s, $(grep -c '"layer"' $W/$D/results.jsonl) rows, $(grep -c '"status": "ok"' $W/$D/results.jsonl) ok"
cd $W && rm -f $D/*.png && tar czf $OUT/$D.tgz $D $D.log
