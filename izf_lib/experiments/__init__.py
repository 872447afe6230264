"""Code that exists to reproduce one figure or table of the book, built on the IZF core.

* ``toy``: the toy experiment of supplementary section 4.1 (Listing 1.1) and its measurements;
* ``toy_baselines``: the toy's CGAN + iMMD (eq. 15) and CVAE + iMMD (eq. 16);
* ``zsl_baselines``: attribute ridge, ESZSL and the Gaussian generator scored beside IZF;
* ``digits_splits``: IZF and those baselines on the DIGITS zero-shot splits;
* ``reported``: numbers from the paper and its peers, always shown labelled "reported";
* ``oracle``: data drawn from a known IZF model, whose Bayes-optimal accuracy is computable;
* ``ablation``: DIGITS ablations of each part of IZF, and the seen/unseen stacking curves;
* ``grid``: runs many small seeded experiments in parallel worker processes, resumably.
"""
