"""izf_lib: the library behind the izf-book reproduction of Invertible Zero-Shot Recognition Flows.

The model core
    ``flows``        invertible layers: permutation, affine coupling, the cascaded flow f (eq. 10-14)
    ``density``      log p(v|y) by change of variables with the factorised latent (eq. 1-9)
    ``losses``       L_flow, the centralizing L_C and iMMD (multi-scale IMQ MMD)
    ``model``        IZF: encode v -> (c, z_f), generate from attributes, the training objective
    ``classifiers``  IZF-NBC, IZF-Softmax and the shared linear-softmax classifier and trainer
    ``metrics``      per-class accuracy, CZSL T1, GZSL U, S, H
    ``collapse``     is the reverse pass collapsing? per-epoch iMMD terms, generated spread, the verdict
    ``config``       IZFConfig: every setting with its source, named presets
    ``rng``          named random streams: every draw derived from (seed, stream, epoch)
    ``precision``    precision policies: fp32, bf16 (sub-network matmuls only), tf32 (CUDA)
Data
    ``data``         the xlsa17 loader with validation, splits, the bundled class-level files
    ``prepare``      writers of the DIGITS benchmark and synthetic surrogates in the xlsa17 layout
Running
    ``step``         one training step, eager or replayed from a CUDA graph (fixed shapes, pre-drawn noise)
    ``train``        the training loop: seeded, checkpointed, resumable, blind to test data
    ``evaluation``   scoring a trained model on held-out images (and the predictions behind it)
    ``experiment``   fit = train + score + epoch selection; RunResult reads and writes results.json
    ``results``      collects run directories into the tables under results/
    ``report``       the chapters' printing: findings and tables wrapped to the book's column
    ``tune``         settings chosen on a class-level validation fold, never on test images
    ``__main__``     the command line: prepare, train, evaluate, tune, toy
Experiments (``izf_lib.experiments``: what reproduces one figure or table)
    ``toy``, ``toy_baselines``, ``zsl_baselines``, ``digits_splits``, ``reported``, ``oracle`` (data
    from a known IZF model), ``ablation`` (DIGITS ablations, stacking curves), ``diagnosis`` (where a
    generator puts the unseen class means), ``immd_forms`` (the forms of L_iMMD on surrogates and the
    declared rules that chose the default), ``at_scale`` (the defaults on 2048-d surrogates of AWA1, CUB
    and SUN shapes), ``grid`` (parallel, resumable runs), ``engine`` (the local pool or submitit jobs),
    ``notebook_runs`` (a chapter run as such a job)
"""

__version__ = "0.1.0"
