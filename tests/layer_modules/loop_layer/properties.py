"""A data layer that never finishes importing."""
from sandbox import event_property

while True:
    pass


@event_property(namespace="loop_layer", name="x")
def x(event):
    return 1
