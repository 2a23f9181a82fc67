"""Tools that are not the product: the demo, the doctor, the topology listing."""
