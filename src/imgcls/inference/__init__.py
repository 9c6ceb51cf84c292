"""A trained model in use: the Classifier, prediction results, the saved-model directory format,
ONNX Runtime prediction without torch, the choice between the two runtimes, and streaming batch
prediction over large folders.
"""
