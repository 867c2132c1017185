"""Stage 4: the FMCIB network (one definition), its weights, device choice, the feature extractor and linear heads."""
