"""Training: datasets, sklearn/Keras/RLlib candidates, MLflow logging (built in the training issue)."""
