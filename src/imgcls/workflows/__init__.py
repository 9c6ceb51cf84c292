"""The whole jobs, each a recipe of steps from the packages below: train (and resume), cross-
validate and compare backbones, compare trained runs, inspect a data set, and the demo.
"""
