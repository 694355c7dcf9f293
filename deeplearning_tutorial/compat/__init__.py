"""Namespaces of other libraries' names, for programs ported by their imports alone.

:mod:`deeplearning_tutorial.compat.theano` is Theano 1.0's, as the tutorials used it.
"""
