"""`function = "train:main"` in sweep.toml: main() is called with each run's parameters."""


def main(lr, width):
    return {"loss": lr / width}
