"""The images of a corpus: cached backbone features and detected objects, each image once."""
