"""The paper's analyses as tested functions and commands.

Submodules: :mod:`.metrics` (metrics, bootstrap CIs, paired permutation tests, comparison
tables), :mod:`.survival` (tune-set threshold, Kaplan–Meier, log-rank, Cox), :mod:`.stability`
(ICC, test–retest feature agreement, inter-reader seed perturbation), :mod:`.tsne`,
:mod:`.saliency` (MONAI smooth guided back-propagation), :mod:`.biology` (gene filter,
correlations, GMT enrichment), :mod:`.radiomics_baseline` (pyradiomics features) and
:mod:`.report` (one folder of tables and figures per study). :mod:`.cli` registers the
``evaluate`` and ``radiomics`` subcommands of ``mhub-fmcib-train``.
"""
