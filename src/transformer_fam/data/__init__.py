"""Data for training: tokenizers, corpora (files, folders, jsonl, built-in), batching, PassKey."""

from .batching import DocumentBatches, PackedBatches, PasskeyBatches, make_batches
from .corpora import CORPORA, get_corpus, read_documents, strip_gutenberg
from .tokenizer import byte_tokenizer, encode, load_tokenizer

__all__ = ["CORPORA", "DocumentBatches", "PackedBatches", "PasskeyBatches", "byte_tokenizer", "encode",
           "get_corpus", "load_tokenizer", "make_batches", "read_documents", "strip_gutenberg"]
