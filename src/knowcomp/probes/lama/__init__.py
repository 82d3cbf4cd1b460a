"""LAMA cloze probes (T-REx, Google-RE, SQuAD, ConceptNet subset) for every model family."""
