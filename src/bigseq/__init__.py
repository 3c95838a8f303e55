"""bigseq: sequence-to-sequence language models (GRU and Transformer encoder-decoders).

import bigseq
run = bigseq.load("runs/g2p")
run.generate(["hello"], beam=5)
"""

from bigseq.api import Seq2SeqRun, finetune, load, pretrain, train
from bigseq.config import Config, build_config
from bigseq.errors import BigseqError

__all__ = ["BigseqError", "Config", "Seq2SeqRun", "build_config", "finetune", "load", "pretrain", "train"]
__version__ = "0.1.0"
