"""The deeplearning.net Theano tutorials (logistic regression, MLP, LeNet) on PyTensor.

Modules mirror the original files: ``logistic_sgd``, ``mlp``,
``convolutional_mlp``; ``ops`` provides the 2-D convolution and pooling that
PyTensor lacks; ``speedups`` the opt-in rewrites the tutorial programs (all but
``logistic_cg``) compile with.  Importing any of them changes nothing else in the process.
"""
