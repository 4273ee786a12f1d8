"""A Flower app in the shape of Flower's PyTorch quickstart, on fedchain's ``digits`` task (nothing downloaded)."""
