"""Pretrained backbones and what they compute: the one registry of named backbones (each carrying
its preprocessing), finding and fitting weights, the networks timm and imgcls build, BatchNorm
folding, cutting a network into a frozen trunk and a trainable top, and frozen-feature
extraction with its cache.
"""
