"""trainer_cli."""
