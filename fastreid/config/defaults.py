"""All configuration keys with their defaults; YAML files only override these.

Every key carries a one-line comment: ``tools/gen_config_docs.py`` turns them into
``docs/config_reference.md``.
"""
from .config import CfgNode as CN

_C = CN()

# Model
_C.MODEL = CN()
# Device to run on: "cuda" or "cpu" ("cuda" falls back to cpu with a warning when unavailable).
_C.MODEL.DEVICE = "cuda"
# Name of the meta-architecture in META_ARCH_REGISTRY.
_C.MODEL.META_ARCHITECTURE = "Baseline"
# Top-level module names (e.g. ["backbone"]) kept frozen during the first SOLVER.FREEZE_ITERS iterations.
_C.MODEL.FREEZE_LAYERS = []
# Checkpoint to initialise the whole model from (original fast-reid checkpoints load too).
_C.MODEL.WEIGHTS = ""
# Per-channel mean subtracted inside the model from 0..255 images (not stored in checkpoints).
_C.MODEL.PIXEL_MEAN = [123.675, 116.28, 103.53]
# Per-channel std dividing 0..255 images inside the model (not stored in checkpoints).
_C.MODEL.PIXEL_STD = [58.395, 57.12, 57.375]

_C.MODEL.BACKBONE = CN()
# Name of the backbone builder in BACKBONE_REGISTRY.
_C.MODEL.BACKBONE.NAME = "build_resnet_backbone"
# ResNet depth: "18x", "34x", "50x" or "101x".
_C.MODEL.BACKBONE.DEPTH = "50x"
# Stride of the last stage (1 keeps a larger final feature map, as in re-id).
_C.MODEL.BACKBONE.LAST_STRIDE = 1
# Channels of the backbone output feature map (512 for 18x/34x, 2048 for 50x/101x).
_C.MODEL.BACKBONE.FEAT_DIM = 2048
# Normalisation layers: "BN", "syncBN" (synchronised under DDP), "FrozenBN" or "GhostBN" (fast-reid's; batch norm here).
_C.MODEL.BACKBONE.NORM = "BN"
# Use IBN-a blocks (instance + batch norm split) in layers 1-3.
_C.MODEL.BACKBONE.WITH_IBN = False
# Use squeeze-and-excitation in every residual block.
_C.MODEL.BACKBONE.WITH_SE = False
# Insert non-local blocks at the reference positions (layer2 and layer3).
_C.MODEL.BACKBONE.WITH_NL = False
# Inner width of each non-local block; 1 as in the original code (released checkpoints), 0 means C/2 as in the paper.
_C.MODEL.BACKBONE.NL_WIDTH = 1
# Initialise the backbone from ImageNet weights.
_C.MODEL.BACKBONE.PRETRAIN = False
# Local file with ImageNet weights (IBN-Net release or torchvision format); empty downloads by URL.
_C.MODEL.BACKBONE.PRETRAIN_PATH = ""

_C.MODEL.HEADS = CN()
# Name of the head in HEAD_REGISTRY.
_C.MODEL.HEADS.NAME = "EmbeddingHead"
# Normalisation of the neck: "BN", "syncBN", "FrozenBN" or "GhostBN" (as MODEL.BACKBONE.NORM).
_C.MODEL.HEADS.NORM = "BN"
# Number of training identities; 0 means "set from the training set".
_C.MODEL.HEADS.NUM_CLASSES = 0
# Output channels of an optional 1x1 conv after pooling; 0 disables it.
_C.MODEL.HEADS.EMBEDDING_DIM = 0
# Add the BN neck after pooling.
_C.MODEL.HEADS.WITH_BNNECK = True
# Feature given to the metric losses in training: "before" or "after" the BN neck (eval always returns the neck output).
_C.MODEL.HEADS.NECK_FEAT = "before"
# Pooling: GeneralizedMeanPoolingP, GeneralizedMeanPooling, GlobalAvgPool, GlobalMaxPool, AdaptiveAvgMaxPool.
_C.MODEL.HEADS.POOL_LAYER = "GlobalAvgPool"
# Initial (or fixed) p of generalised-mean pooling.
_C.MODEL.HEADS.GEM_P = 3.0
# Classifier layer: Linear, CircleSoftmax, ArcSoftmax or CosSoftmax.
_C.MODEL.HEADS.CLS_LAYER = "Linear"
# Logit scale s of the margin classifiers.
_C.MODEL.HEADS.SCALE = 1.0
# Margin m of the margin classifiers.
_C.MODEL.HEADS.MARGIN = 0.0

_C.MODEL.LOSSES = CN()
# Losses to sum: any of CrossEntropyLoss, TripletLoss, CircleLoss, Cosface.
_C.MODEL.LOSSES.NAME = ("CrossEntropyLoss",)

_C.MODEL.LOSSES.CE = CN()
# Label smoothing; a negative value makes it adaptive (from the prediction confidence).
_C.MODEL.LOSSES.CE.EPSILON = 0.0
# Scale of the adaptive label smoothing (used when EPSILON < 0).
_C.MODEL.LOSSES.CE.ALPHA = 0.2
# Weight of the cross-entropy loss.
_C.MODEL.LOSSES.CE.SCALE = 1.0

_C.MODEL.LOSSES.TRI = CN()
# Triplet margin; 0 selects the soft margin log(1 + exp(d_ap - d_an)).
_C.MODEL.LOSSES.TRI.MARGIN = 0.3
# L2-normalise the embeddings before computing distances.
_C.MODEL.LOSSES.TRI.NORM_FEAT = False
# Hardest positive/negative mining (True) or softmax-weighted mining (False).
_C.MODEL.LOSSES.TRI.HARD_MINING = True
# Weight of the triplet loss.
_C.MODEL.LOSSES.TRI.SCALE = 1.0

_C.MODEL.LOSSES.CIRCLE = CN()
# Relaxation margin of the pairwise circle loss.
_C.MODEL.LOSSES.CIRCLE.MARGIN = 0.25
# Scale factor gamma of the pairwise circle loss.
_C.MODEL.LOSSES.CIRCLE.GAMMA = 128.0
# Weight of the circle loss.
_C.MODEL.LOSSES.CIRCLE.SCALE = 1.0

_C.MODEL.LOSSES.COSFACE = CN()
# Margin of the pairwise cosface loss.
_C.MODEL.LOSSES.COSFACE.MARGIN = 0.25
# Scale factor gamma of the pairwise cosface loss.
_C.MODEL.LOSSES.COSFACE.GAMMA = 128.0
# Weight of the cosface loss.
_C.MODEL.LOSSES.COSFACE.SCALE = 1.0

# Knowledge distillation (MODEL.META_ARCHITECTURE Distiller): frozen teachers guide the student's logits.
_C.KD = CN()
# Config files of the teacher models (each built as a Baseline), e.g. a teacher run's OUTPUT_DIR/config.yaml.
_C.KD.MODEL_CONFIG = []
# Weights of the teacher models, one per KD.MODEL_CONFIG entry.
_C.KD.MODEL_WEIGHTS = []
_C.KD.EMA = CN()
# Also distil from a moving average of the student itself (self-distillation), as the first teacher.
_C.KD.EMA.ENABLED = False
# Momentum of the moving average (per iteration).
_C.KD.EMA.MOMENTUM = 0.999

# Input pipeline
_C.INPUT = CN()
# Training image size [height, width]; one value [S] resizes the shorter side to S keeping the aspect (fast-reid), [0] keeps the image size.
_C.INPUT.SIZE_TRAIN = [256, 128]
# Test image size [height, width]; one value [S] resizes the shorter side to S, [0] keeps the image size.
_C.INPUT.SIZE_TEST = [256, 128]
# Read images as 8-bit grayscale repeated to 3 channels (as the reference); False reads RGB.
_C.INPUT.GRAYSCALE = True
# How drawings are shrunk to the input size: "bicubic" (the reference), "area" or "ink" (keeps thin lines; docs/datasets.md).
_C.INPUT.RESIZE_MODE = "bicubic"

_C.INPUT.CROP = CN()
# After the resize: a random resized crop in training, a centre crop at test time (fast-reid's INPUT.CROP).
_C.INPUT.CROP.ENABLED = False
# Crop size [height, width], or [S] for S x S.
_C.INPUT.CROP.SIZE = [224, 224]
# Training crop: range of the area fraction of the image that is cropped.
_C.INPUT.CROP.SCALE = [0.16, 1]
# Training crop: range of the aspect ratio (width / height) of the crop.
_C.INPUT.CROP.RATIO = [3.0 / 4.0, 4.0 / 3.0]

_C.INPUT.FLIP = CN()
# Random horizontal flip during training.
_C.INPUT.FLIP.ENABLED = False
# Probability of the horizontal flip.
_C.INPUT.FLIP.PROB = 0.5

_C.INPUT.PADDING = CN()
# Pad then randomly crop back to SIZE_TRAIN.
_C.INPUT.PADDING.ENABLED = False
# Padding mode: "constant", "edge", "reflect" or "symmetric".
_C.INPUT.PADDING.MODE = "constant"
# Pixels padded on every side.
_C.INPUT.PADDING.SIZE = 10

_C.INPUT.CJ = CN()
# Random colour jitter during training.
_C.INPUT.CJ.ENABLED = False
# Probability of applying the colour jitter.
_C.INPUT.CJ.PROB = 0.5
# Brightness jitter factor.
_C.INPUT.CJ.BRIGHTNESS = 0.15
# Contrast jitter factor.
_C.INPUT.CJ.CONTRAST = 0.15
# Saturation jitter factor.
_C.INPUT.CJ.SATURATION = 0.1
# Hue jitter factor.
_C.INPUT.CJ.HUE = 0.1

_C.INPUT.AUTOAUG = CN()
# AutoAugment during training.
_C.INPUT.AUTOAUG.ENABLED = False
# Probability of applying AutoAugment to an image.
_C.INPUT.AUTOAUG.PROB = 0.0
# AutoAugment policy: "original" (the challenge code's: paper ImageNet policy, grey fill, random bilinear/bicubic) or torchvision's "imagenet", "cifar10", "svhn".
_C.INPUT.AUTOAUG.POLICY = "original"
# Grey level (0..255) of pixels uncovered by AutoAugment's rotations/shears: 128 as the original; 255 keeps drawings' background white.
_C.INPUT.AUTOAUG.FILL = 128

# Augmentations for line drawings, applied after the resize (docs/training.md, "Drawing-aware augmentation").
_C.INPUT.DRAWING = CN()
# Probability of thickening (dilating the ink by 1..LINE_MAX_PX px) or thinning the lines.
_C.INPUT.DRAWING.LINE_PROB = 0.0
# Largest thickening, in pixels on each side of a line at the training size.
_C.INPUT.DRAWING.LINE_MAX_PX = 1
# Probability of lighter/darker ink and off-white paper.
_C.INPUT.DRAWING.INK_PROB = 0.0
# Probability of a 90, 180 or 270 degree turn (white fill).
_C.INPUT.DRAWING.ROT90_PROB = 0.0
# Probability of a vertical flip.
_C.INPUT.DRAWING.VFLIP_PROB = 0.0
# Probability of cropping a window and scaling it back to the full size.
_C.INPUT.DRAWING.CROP_PROB = 0.0
# Range of the cropped window's share of the image area.
_C.INPUT.DRAWING.CROP_SCALE = (0.6, 1.0)

_C.INPUT.REA = CN()
# Random erasing during training.
_C.INPUT.REA.ENABLED = False
# Probability of random erasing.
_C.INPUT.REA.PROB = 0.5
# Fill value of erased pixels in the 0..255 range, per channel.
_C.INPUT.REA.VALUE = [123.675, 116.28, 103.53]

# Datasets
_C.DATASETS = CN()
# Training datasets (names in DATASET_REGISTRY); ids are prefixed by name and relabeled.
_C.DATASETS.NAMES = ("DeepPatent",)
# Test datasets evaluated in turn.
_C.DATASETS.TESTS = ("DeepPatent",)
# Root folder of all datasets; empty uses $FASTREID_DATASETS or "datasets".
_C.DATASETS.ROOT = ""
# Also train on the query and gallery splits (DeepPatent: add train_patent_val.txt).
_C.DATASETS.COMBINEALL = False
# Skip unreadable or missing images (counted in the log) instead of stopping with an error.
_C.DATASETS.SKIP_UNREADABLE = False

# Resized copies made by tools/prepare_dataset.py (<root>/prepared/<H>x<W>): "auto" (when one matches the loader and gives the same input), "always" or "never".
_C.DATASETS.PREPARED = "auto"

_C.DATASETS.CUSTOM = CN()
# ImageFolderRetrieval: root folder with one sub-folder per identity (relative to DATASETS.ROOT).
_C.DATASETS.CUSTOM.FOLDER = ""
# ImageFolderRetrieval: fraction of identities used for query/gallery when there are no train/query/gallery sub-folders.
_C.DATASETS.CUSTOM.TEST_FRACTION = 0.2
# ImageFolderRetrieval: seed of the identity split.
_C.DATASETS.CUSTOM.SPLIT_SEED = 0
# ListFileDataset: "<path> <label>" list of training images.
_C.DATASETS.CUSTOM.TRAIN_LIST = ""
# ListFileDataset: "<path> <label>" list of query images.
_C.DATASETS.CUSTOM.QUERY_LIST = ""
# ListFileDataset: "<path> <label>" list of gallery images.
_C.DATASETS.CUSTOM.GALLERY_LIST = ""
# ListFileDataset: folder the listed paths are relative to (empty: the list file's folder).
_C.DATASETS.CUSTOM.IMAGE_ROOT = ""

# Data loading
_C.DATALOADER = CN()
# Training sampler: NaiveIdentitySampler, BalancedIdentitySampler or TrainingSampler.
_C.DATALOADER.SAMPLER_TRAIN = "TrainingSampler"
# Images per identity in a batch (K of P x K).
_C.DATALOADER.NUM_INSTANCE = 4
# Worker processes per data loader; -1: from the machine (cores per process, at most 16, on CUDA; half of them on CPU).
_C.DATALOADER.NUM_WORKERS = -1
# Pin host memory for faster transfer to the GPU.
_C.DATALOADER.PIN_MEMORY = True
# Keep workers alive between epochs.
_C.DATALOADER.PERSISTENT_WORKERS = True
# Batches prefetched by each worker.
_C.DATALOADER.PREFETCH_FACTOR = 2

# Solver
_C.SOLVER = CN()
_C.SOLVER.AMP = CN()
# Mixed precision training (autocast; fp16 uses a GradScaler, CUDA only).
_C.SOLVER.AMP.ENABLED = False
# Autocast dtype: "float16" (CUDA) or "bfloat16" (CPU and CUDA).
_C.SOLVER.AMP.DTYPE = "float16"
# Keep activations in channels_last memory format.
_C.SOLVER.CHANNELS_LAST = False
# Wrap the model in torch.compile.
_C.SOLVER.COMPILE = False
# Optimizer: Adam, AdamW or SGD.
_C.SOLVER.OPT = "Adam"
# Training epochs (an epoch is len(train set) // IMS_PER_BATCH iterations).
_C.SOLVER.MAX_EPOCH = 120
# Optional cap on total iterations (0: MAX_EPOCH decides); handy for smoke runs.
_C.SOLVER.MAX_ITER = 0
# Base learning rate.
_C.SOLVER.BASE_LR = 3e-4
# Learning-rate multiplier of bias parameters.
_C.SOLVER.BIAS_LR_FACTOR = 1.0
# Learning-rate multiplier of the head parameters.
_C.SOLVER.HEADS_LR_FACTOR = 1.0
# SGD momentum.
_C.SOLVER.MOMENTUM = 0.9
# SGD with Nesterov momentum.
_C.SOLVER.NESTEROV = False
# Weight decay.
_C.SOLVER.WEIGHT_DECAY = 0.0005
# Weight decay of normalisation-layer parameters.
_C.SOLVER.WEIGHT_DECAY_NORM = 0.0005
# Schedule after warmup and delay: MultiStepLR or CosineAnnealingLR (stepped per epoch).
_C.SOLVER.SCHED = "MultiStepLR"
# Epochs at constant learning rate before the schedule starts.
_C.SOLVER.DELAY_EPOCHS = 0
# MultiStepLR decay factor.
_C.SOLVER.GAMMA = 0.1
# MultiStepLR milestones in epochs.
_C.SOLVER.STEPS = [30, 55]
# Final learning rate of CosineAnnealingLR.
_C.SOLVER.ETA_MIN_LR = 1e-7
# Learning-rate factor at iteration 0 of the warmup.
_C.SOLVER.WARMUP_FACTOR = 0.1
# Warmup length in iterations (stepped per iteration).
_C.SOLVER.WARMUP_ITERS = 1000
# Warmup shape: "linear" or "constant".
_C.SOLVER.WARMUP_METHOD = "linear"
# Iterations during which MODEL.FREEZE_LAYERS stay frozen (weights and BN statistics).
_C.SOLVER.FREEZE_ITERS = 0
# Save model_XXXX.pth every this many epochs.
_C.SOLVER.CHECKPOINT_PERIOD = 20
# Global training batch size, split over all processes.
_C.SOLVER.IMS_PER_BATCH = 64

_C.SOLVER.CLIP_GRADIENTS = CN()
# Clip gradients before the optimizer step.
_C.SOLVER.CLIP_GRADIENTS.ENABLED = False
# "value" (clamp each element) or "norm" (rescale the total norm).
_C.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "norm"
# Clipping threshold.
_C.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 5.0
# p of the p-norm for "norm" clipping.
_C.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0

# Testing
_C.TEST = CN()
# Evaluate every this many epochs (and at the end); 0 only at the end.
_C.TEST.EVAL_PERIOD = 20
# Global test batch size; -1: 256 per process on CUDA, 64 on CPU.
_C.TEST.IMS_PER_BATCH = -1
# Distance: "cosine" or "euclidean".
_C.TEST.METRIC = "cosine"
# Extract features under autocast: "auto" (float16 on CUDA, off on CPU), "" (off), "float16" or "bfloat16".
_C.TEST.AMP_DTYPE = "auto"
# Feed test images in channels_last memory format on CUDA (ignored on CPU).
_C.TEST.CHANNELS_LAST = True
# Store extracted features as "float32" or "float16".
_C.TEST.FEAT_DTYPE = "float32"
# Ranks written to result.npy and shown in visualisations.
_C.TEST.TOPK = 10
# Several processes: each keeps its own part of the gallery (exact merge of per-part results, docs/scaling.md); False: every feature is all-gathered.
_C.TEST.SHARD_GALLERY = True
# Where the unlabeled challenge set's result.npy goes (empty: OUTPUT_DIR/result.npy).
_C.TEST.RESULT_PATH = ""

_C.TEST.FLIP = CN()
# Average the features of the image and its horizontal flip.
_C.TEST.FLIP.ENABLED = False

_C.TEST.SEARCH = CN()
# Nearest-neighbour backend: "auto" (torch; faiss for an approximate index), "faiss" (GPU when faiss has it) or "torch" (chunked, CUDA when available).
_C.TEST.SEARCH.BACKEND = "auto"
# faiss structure: "flat" (exact), "ivf" or "ivf-pq" (approximate, for millions of vectors).
_C.TEST.SEARCH.INDEX = "flat"
# IVF: number of inverted lists.
_C.TEST.SEARCH.NLIST = 1024
# IVF: lists visited per query.
_C.TEST.SEARCH.NPROBE = 32
# IVF-PQ: 8-bit sub-quantisers per vector (0: dimension / 8); must divide the dimension.
_C.TEST.SEARCH.PQ_M = 0
# IVF-PQ: re-score REFINE x k candidates exactly with the uncompressed features (0: answer with the compressed scores).
_C.TEST.SEARCH.REFINE = 4

_C.TEST.AQE = CN()
# Alpha-weighted average query expansion.
_C.TEST.AQE.ENABLED = False
# Passes of query expansion.
_C.TEST.AQE.QE_TIME = 1
# Neighbours averaged (the item itself included).
_C.TEST.AQE.QE_K = 5
# Weight exponent: w = similarity ** ALPHA.
_C.TEST.AQE.ALPHA = 3.0
# "all": expand queries and database together (reference); "query": expand queries only.
_C.TEST.AQE.MODE = "all"
# Choose QE_K/ALPHA (and DBA, re-ranking: AUTO_DBA_K, AUTO_RERANK) on labeled sets, none unless the gain beats its noise; unlabeled sets and indexes apply the recorded choice.
_C.TEST.AQE.AUTO = False
# TEST.AQE.AUTO: candidate neighbour counts (the item itself included).
_C.TEST.AQE.AUTO_K = (2, 3, 5, 10)
# TEST.AQE.AUTO: candidate weight exponents.
_C.TEST.AQE.AUTO_ALPHA = (0.0, 1.0, 2.0, 3.0)
# TEST.AQE.AUTO: metric maximised: "mAP@10", "mAP" or "Rank-1".
_C.TEST.AQE.AUTO_CRITERION = "mAP@10"
# TEST.AQE.AUTO: the choice file (empty: OUTPUT_DIR/qe_choice.json).
_C.TEST.AQE.AUTO_FILE = ""
# TEST.AQE.AUTO: one-sided confidence (paired bootstrap over queries, Bonferroni over candidates) that an expansion's gain is real; 0: any mean gain.
_C.TEST.AQE.AUTO_CONFIDENCE = 0.95
# TEST.AQE.AUTO: the gain's lower confidence bound must exceed this many points of AUTO_CRITERION.
_C.TEST.AQE.AUTO_MIN_GAIN = 0.0
# TEST.AQE.AUTO: DBA neighbour counts tried as candidates (alpha TEST.DBA.ALPHA); empty: DBA is not tuned (TEST.DBA.ENABLED applies).
_C.TEST.AQE.AUTO_DBA_K = ()
# TEST.AQE.AUTO: try k-reciprocal re-ranking (TEST.RERANK.K1/K2/LAMBDA) as a candidate; False: TEST.RERANK.ENABLED applies.
_C.TEST.AQE.AUTO_RERANK = False

_C.TEST.DBA = CN()
# Database-side augmentation: replace each database feature by the weighted mean of its neighbours.
_C.TEST.DBA.ENABLED = False
# Neighbours of each database item used by DBA.
_C.TEST.DBA.K = 5
# Weight exponent of DBA.
_C.TEST.DBA.ALPHA = 3.0

_C.TEST.RERANK = CN()
# k-reciprocal re-ranking.
_C.TEST.RERANK.ENABLED = False
# k1 of k-reciprocal re-ranking.
_C.TEST.RERANK.K1 = 20
# k2 of k-reciprocal re-ranking.
_C.TEST.RERANK.K2 = 6
# Weight of the original distance in the final distance.
_C.TEST.RERANK.LAMBDA = 0.3

_C.TEST.PRECISE_BN = CN()
# Recompute BN statistics on training data before evaluation.
_C.TEST.PRECISE_BN.ENABLED = False
# Dataset used for precise BN.
_C.TEST.PRECISE_BN.DATASET = "DeepPatent"
# Batches used for precise BN.
_C.TEST.PRECISE_BN.NUM_ITER = 300

_C.TEST.VIS = CN()
# Write a retrieval visualisation (PNG grids + HTML) after evaluation.
_C.TEST.VIS.ENABLED = False
# Queries shown (the worst-AP ones).
_C.TEST.VIS.NUM_QUERIES = 10

# Learning from unlabeled drawings (tools/pseudo_label.py, docs/unlabeled.md)
_C.UNLABELED = CN()
# List of the unlabeled drawings (one path per line, other columns ignored), relative to DATASETS.ROOT; paths in it are relative to its folder.
_C.UNLABELED.POOL_LIST = ""
# Rounds of (extract pool features, cluster them into pseudo-identities, fine-tune on train + pool).
_C.UNLABELED.ROUNDS = 2
# Training epochs per round, on the labeled training set plus the clustered pool drawings.
_C.UNLABELED.EPOCHS = 1
# Learning rate of the rounds; 0 keeps SOLVER.BASE_LR.
_C.UNLABELED.BASE_LR = 0.0
# DBSCAN radius on the k-reciprocal Jaccard distance (0..1): smaller makes fewer, purer clusters.
_C.UNLABELED.EPS = 0.6
# DBSCAN core size: drawings within EPS (itself included) that make a drawing a core of a cluster.
_C.UNLABELED.MIN_SAMPLES = 2
# k1 of the k-reciprocal neighbourhoods used for the Jaccard distance.
_C.UNLABELED.K1 = 20
# k2 (local expansion) of the k-reciprocal neighbourhoods.
_C.UNLABELED.K2 = 6

# Misc
# Config files of successive training stages run by one command; each starts from the previous stage's best model.
_C.STAGES = []
# Folder for checkpoints, logs, metrics and results.
_C.OUTPUT_DIR = "logs/"
# Random seed; negative draws one per run (recorded in config.yaml and checkpoints, reused by --resume).
_C.SEED = -1
# Let cuDNN pick the fastest convolution algorithms.
_C.CUDNN_BENCHMARK = False
