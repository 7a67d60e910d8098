"""Generated protobuf modules (make proto); do not edit."""
