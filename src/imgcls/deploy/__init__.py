"""Taking a saved model elsewhere: ONNX and TorchScript export with a parity check, and the HTTP
server with its web page.
"""
