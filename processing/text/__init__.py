"""Word vectors and building the semantic-augmentation neighbour table from them."""
