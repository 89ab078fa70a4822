#!/usr/bin/env python3
"""CrypTen on the same DNN-Max private prediction as `privxray bench mpc`: three parties
(processes on one machine, gloo over loopback), one 1x150x125 image, random weights,
one untimed warm-up prediction, then --runs timed ones. Prints seconds per prediction (median),
bytes sent by each party, and rounds, with the torch thread count of each party.

    python3 scripts/crypten_reference.py --threads 1 --runs 3

An outside reference for our benchmarks, never a dependency of the program. CrypTen 0.4.1
imports a torch.onnx module that torch 2.x no longer has; it is only needed for ONNX import,
which this script does not use (set that import to None in crypten/nn/onnx_converter.py).
"""
import argparse
import statistics
import time

import torch


def parse():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1, help="torch threads in each party")
    ap.add_argument("--runs", type=int, default=3)
    return ap.parse_args()


def dnn_max(cnn):
    return cnn.Sequential(
        cnn.Conv2d(1, 32, 3), cnn.ReLU(), cnn.MaxPool2d(2),
        cnn.Conv2d(32, 64, 3), cnn.ReLU(), cnn.MaxPool2d(2),
        cnn.Conv2d(64, 64, 3), cnn.ReLU(), cnn.MaxPool2d(2),
        cnn.Flatten(), cnn.Linear(64 * 17 * 13, 64), cnn.ReLU(),
        cnn.Linear(64, 2),
    )


def main():
    a = parse()
    import crypten
    import crypten.mpc as mpc
    import crypten.nn as cnn

    @mpc.run_multiprocess(world_size=3)
    def party():
        torch.set_num_threads(a.threads)
        crypten.cfg.communicator.verbose = True
        comm = crypten.comm.get()
        torch.manual_seed(1)
        model = dnn_max(cnn)
        model.encrypt(src=0)
        model.eval()
        x = torch.rand(1, 1, 150, 125)
        times = []
        for i in range(a.runs + 1):
            comm.reset_communication_stats()
            t0 = time.perf_counter()
            xe = crypten.cryptensor(x, src=1)
            y = model(xe).get_plain_text(dst=1)
            dt = time.perf_counter() - t0
            if i > 0:
                times.append(dt)
        stats = comm.get_communication_stats()
        rank = comm.get_rank()
        print(
            f"party {rank}: threads {a.threads}, median {statistics.median(times):.2f} s over {a.runs} runs "
            f"({', '.join(f'{t:.2f}' for t in times)}), last run sent {stats['bytes'] / 1e6:.1f} MB, "
            f"{stats['rounds']} rounds",
            flush=True,
        )
        del y

    # Communication statistics are only counted in verbose mode.
    crypten.cfg.communicator.verbose = True
    crypten.init()
    party()


if __name__ == "__main__":
    main()
