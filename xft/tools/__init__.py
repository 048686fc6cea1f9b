"""Tools around training: chat (and later convert, vocabulary, evaluation)."""
