"""Train, validate or test a genrec model from a YAML config (LightningCLI).

    python train.py fit --config configs/quickstart.yaml
    python train.py fit --config configs/hstu/ml-1m.yaml --data.init_args.root ../shared/data/ml-1m
    python train.py --help
"""
from genrec.cli import main

if __name__ == "__main__":
    main()
