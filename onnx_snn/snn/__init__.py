"""The spiking network: neurons, the rectifier-to-neuron rewrite, scale folding,
time folding, and their assembly into a converted model."""
